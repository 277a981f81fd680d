//! What an octopoll run measured and how it is shown: the request [`counts`], the
//! coverage [`timeline`] and each fault's recovery, the [`Report`] printed for
//! people and written as JSON, the per-second CSV, the self-contained [`html`]
//! report, the [`junit`] XML for CI, and the [`thresholds`] that judge it
//! ([`verdict`]), and how two runs' reports [`compare`]. Pure data and
//! rendering: nothing here runs a cluster (`octopoll-scenario` does).

pub mod compare;
pub mod counts;
pub mod html;
pub mod junit;
pub mod listening;
pub mod record;
pub mod report;
pub mod thresholds;
pub mod timeline;
pub mod verdict;

pub use counts::Counts;
pub use record::RunRecord;
pub use report::{ProcessFigures, Report, RunFacts};
