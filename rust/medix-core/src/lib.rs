//! medix-core: the exact, hot parts of the MediX-R1 reward and of group-relative RL, without Python.
//!
//! - [`reward`]: format, modality, answer extraction and answer validity in `strict` and `reference` modes.
//! - [`advantages`]: NaN-aware group-relative advantages with degenerate-group flags.
//!
//! Every function is total (no panics on any `&str`) and linear in its input.

pub mod advantages;
pub mod reward;
pub mod tags;
pub mod text;

pub use advantages::{group_advantages, AdvantageError, AdvantageOutput, GroupStats, Groups, Scale};
pub use reward::{
    analyze, extract_answer, format_reward, is_invalid_answer, modality_reward, parse_ground_truth, Analysis,
    Mode,
};
pub use tags::MODALITY_TAGS;
