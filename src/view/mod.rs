//! What people see, independent of where they see it: the heatmap grid model (`grid`) that the
//! explorer and the PNG figures both draw, and the text formatting (`text`) shared by the CLI, the
//! explorer, plots and the report.

pub mod grid;
pub mod text;
