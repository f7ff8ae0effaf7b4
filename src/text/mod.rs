//! Text helpers that import nothing of recluster: what others wrote made safe (`escape` for an
//! operator's terminal, `strict_json` for JSON that must have one meaning), and what recluster
//! writes (`json_string` literals, `plural` counts).

pub mod escape;
pub mod json_string;
pub mod plural;
pub mod strict_json;
