//! What the views show, derived from adapters and statistics when they change (never while
//! drawing): list rows, the tensor tree, the compare summary. The layer, expert and compare
//! grids are `view::grid`'s.

mod compare;
mod list;
mod stats;
mod tree;

pub use compare::*;
pub use list::*;
pub use stats::*;
pub use tree::*;
