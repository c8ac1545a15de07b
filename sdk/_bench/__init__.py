"""`ponder bench …`: benchmarks users run on their own devices. Only the command line
(`ponder._cli`) imports this package; each module here is one benchmark's run, timing or report."""
