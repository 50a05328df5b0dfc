use thiserror::Error;

/// Everything that can go wrong in the IBE layer. Variants say what was
/// wrong with the input; decryption and verification failures are
/// deliberately opaque (spec 3.2: a rejection must not reveal which step
/// failed).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IbeError {
    /// A byte string has the wrong length for what it should encode.
    #[error("invalid length for {what}: expected {expected} bytes, got {got}")]
    InvalidLength {
        /// What was being decoded.
        what: &'static str,
        /// The length the encoding requires.
        expected: usize,
        /// The length received.
        got: usize,
    },
    /// Bytes that are not a canonical encoding of a valid point of the
    /// prime-order subgroup.
    #[error("invalid {0} point encoding (not canonical, not on the curve or not in the subgroup)")]
    InvalidPoint(&'static str),
    /// The identity (neutral) point where a non-identity point is required.
    #[error("{0} must not be the identity point")]
    IdentityPoint(&'static str),
    /// Bytes that are not a canonical scalar, or a zero scalar where it is
    /// forbidden.
    #[error("invalid scalar: {0}")]
    InvalidScalar(&'static str),
    /// A SIP URI that has no identity (section 2).
    #[error("URI has no identity: {0}")]
    InvalidUri(String),
    /// A key period label that is not valid under the provider's period rule.
    #[error("invalid key period: {0}")]
    InvalidPeriod(String),
    /// A public parameter document that cannot be used.
    #[error("invalid public parameters: {0}")]
    InvalidParams(String),
    /// A private key that does not match the identity and parameters
    /// (`e(P, d) != e(P_pub, Q)`).
    #[error("private key does not match its identity under these parameters")]
    KeyCheckFailed,
    /// Decryption failed (one opaque error whatever the step).
    #[error("decryption failed")]
    DecryptionFailed,
    /// The signature does not verify.
    #[error("signature does not verify")]
    InvalidSignature,
    /// The operating system's random generator failed.
    #[error("random number generator failed")]
    Rng,
}
