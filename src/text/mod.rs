//! Text from less trusted parties, made safe: `escape` for an operator's terminal, `strict_json`
//! for JSON that must have one meaning.

pub mod escape;
pub mod strict_json;
