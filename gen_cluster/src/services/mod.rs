//! Servers that ship with every node.

pub mod echo;
pub mod roster;
