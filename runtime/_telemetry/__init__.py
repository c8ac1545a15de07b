"""Device state: battery, CPU and GPU energy probes read from sysfs and NVML, and the probe
registry."""
