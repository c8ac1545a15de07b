"""The torch-free core every layer may import: the error family, registries, configs, exit
rules, result tables and plotting helpers."""
