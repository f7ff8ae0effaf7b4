//! The `recluster` binary. `#![no_main]` keeps Rust's runtime from setting SIGPIPE to ignored
//! before recluster can see what its caller left it as (see `startup`).

#![no_main]

#[unsafe(no_mangle)]
pub extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    recluster::main()
}
