"""The `ponder` command line: thin click commands over the Python functions users import. Every
command is registered here, when the package is imported, so `ponder` and `python -m ponder._cli`
list the same commands."""

from ponder._cli.convert import convert
from ponder._cli.export import bench_export, bench_transformer, export, verify
from ponder._cli.main import bench, main
from ponder._cli.runtime import bench_runtime, profile, run
from ponder._cli.serve import serve
from ponder._cli.simulate import simulate

for command in (convert, export, verify, profile, simulate, run, serve):
    main.add_command(command)
for command in (bench_export, bench_runtime, bench_transformer):
    bench.add_command(command)

__all__ = ["main"]
