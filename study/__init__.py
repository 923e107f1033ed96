"""Running experiments: configs, data, training, launching, run records, sweeps."""
