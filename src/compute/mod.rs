//! Computing on the factors: mmapped access guarded against files that change (`tensor`,
//! `sigbus`), the factored SVD core (`math`), statistics of every delta (`stats`) and comparisons
//! of two adapters (`compare`).

pub mod compare;
pub mod math;
pub mod sigbus;
pub mod stats;
pub mod tensor;
