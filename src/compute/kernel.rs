//! Which of the compute kernels this CPU runs, detected once (the Gram kernel in `gram`, the
//! small SVDs in `small_svd`).

/// How the Gram of a block of rows is accumulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Plain f64 multiply-adds, each Gram entry summed in row order: portable, and the
    /// reference the SIMD kernel is tested against.
    Scalar,
    /// x86-64 AVX2 + FMA (+ F16C): widening loads, f64 FMA into register tiles.
    Avx2Fma,
}

impl Kernel {
    /// The fastest kernel this CPU runs, detected once.
    pub fn detected() -> Kernel {
        static DETECTED: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
        *DETECTED.get_or_init(|| {
            if Kernel::Avx2Fma.available() {
                Kernel::Avx2Fma
            } else {
                Kernel::Scalar
            }
        })
    }

    /// Whether this CPU can run the kernel.
    pub fn available(self) -> bool {
        match self {
            Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Fma => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx2Fma => false,
        }
    }
}
