//! Computing on the factors: mmapped access (`tensor`), the factored SVD core (`math`),
//! statistics of every delta (`stats`) and comparisons of two adapters (`compare`).

pub mod compare;
pub mod math;
pub mod stats;
pub mod tensor;
