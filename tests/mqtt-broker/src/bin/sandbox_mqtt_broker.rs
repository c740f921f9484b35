//! The embeddable broker as a process of its own.

fn main() {}
