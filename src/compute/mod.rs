//! Computing on the factors: mmapped access guarded against files that change (`tensor`,
//! `sigbus`), the factored SVD core (`math`, small spectra in `small_svd`) fed by the in-place Gram kernel (`gram`) once per
//! distinct factor (`shared`), statistics of every delta (`stats`) and comparisons
//! of two adapters (`compare`).

pub mod compare;
pub mod gram;
pub mod kernel;
pub mod math;
pub mod quant;
pub mod shared;
pub mod sigbus;
pub mod small_svd;
pub mod stats;
pub mod tensor;
