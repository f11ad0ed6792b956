//! Where the model runs (`--device`): the host path on the CPU, burn's CPU backend (the f32
//! reference, through the same generic code as CUDA), or CUDA in builds with the `cuda`
//! feature, after a probe for the driver.

use crate::error::StartError;

/// The device the model runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// The host forward: integer kernels on the quantised weights, host K/V pools (the
    /// production CPU path).
    #[default]
    Cpu,
    /// burn's CPU backend with f32 weights: the reference forward, run by the same generic
    /// code the CUDA device uses.
    BurnCpu,
    /// burn's CUDA backend (builds with the `cuda` feature, on a machine with a driver).
    Cuda,
}

impl Device {
    /// The flag's spelling.
    pub fn name(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::BurnCpu => "burn-cpu",
            Device::Cuda => "cuda",
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "burn-cpu" => Ok(Device::BurnCpu),
            "cuda" => Ok(Device::Cuda),
            _ => Err(format!("unknown device {s:?} (cpu, cuda, burn-cpu)")),
        }
    }
}

/// Directories where the CUDA driver library is usually found.
const DRIVER_DIRS: [&str; 5] = [
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/cuda/lib64",
    "/usr/lib/wsl/lib",
];

/// Checks that a CUDA driver is present before burn's CUDA backend touches it (it panics
/// without one): the kernel driver and `libcuda.so.1` on the library path.
pub fn probe_cuda() -> Result<(), StartError> {
    let kernel = std::path::Path::new("/proc/driver/nvidia/version").exists()
        || std::path::Path::new("/dev/nvidia0").exists();
    if !kernel {
        return Err(StartError::Device(
            "no NVIDIA driver: /proc/driver/nvidia/version and /dev/nvidia0 are missing".into(),
        ));
    }
    let from_env = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    let found = from_env
        .split(':')
        .filter(|d| !d.is_empty())
        .chain(DRIVER_DIRS)
        .any(|d| std::path::Path::new(d).join("libcuda.so.1").exists());
    if found {
        Ok(())
    } else {
        Err(StartError::Device(
            "the NVIDIA driver is loaded but libcuda.so.1 is not on the library path".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_print() {
        for d in [Device::Cpu, Device::BurnCpu, Device::Cuda] {
            assert_eq!(d.name().parse::<Device>(), Ok(d));
        }
        assert!("tpu".parse::<Device>().is_err());
    }

    #[test]
    fn cuda_probe_fails_clearly_without_a_driver() {
        if std::path::Path::new("/proc/driver/nvidia/version").exists() {
            // A machine with a driver: the probe must then find the library or say which.
            if let Err(e) = probe_cuda() {
                assert!(e.to_string().contains("libcuda"), "{e}");
            }
            return;
        }
        let err = probe_cuda().expect_err("no driver here");
        assert!(err.to_string().contains("NVIDIA driver"), "{err}");
    }
}
