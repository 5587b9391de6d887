//! Servers that ship with every node.

pub mod dict;
pub mod echo;
pub mod roster;
