"""What the accelerator can do: the peak catalogue, NVML detection, calibration."""
