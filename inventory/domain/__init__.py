"""The pure core: plain dataclasses and functions of plain data, no I/O, no clock, no logger, no thread
(an import-linter contract keeps it so). MIG catalogue and placement rules, prices, pod requests,
offers, node shapes and fit, allocations and cost, GpuNode parsing, health rules, cluster files."""
