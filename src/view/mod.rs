//! What people see, independent of where they see it: the heatmap grid model (`grid`) that the
//! explorer and the PNG figures both draw, what its cells are coloured by (`measure`) and how
//! (`scale`), a training run's timeline as grids (`timeline`), and the text formatting (`text`)
//! shared by the CLI, the explorer, plots and the report.

pub mod grid;
pub mod measure;
pub mod scale;
pub mod text;
pub mod timeline;
