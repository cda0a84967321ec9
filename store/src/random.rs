//! Random bytes from the operating system's CSPRNG, for key ids, secrets and
//! snippet ids.

/// `N` random bytes. Panics only if the kernel's random source fails (the
/// `getrandom` syscall), a broken machine on which no secret can be made.
pub(crate) fn bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).expect("the operating system's random source failed");
    out
}
