//! What people see, independent of where they see it: text formatting shared by the CLI, the
//! explorer, plots and the report.

pub mod text;
