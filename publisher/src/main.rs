//! The `publisher` command line.

fn main() {}
