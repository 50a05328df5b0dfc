//! Identity-based cryptography of the IBE-SIP tunnel (suite `IBESIP-V01`,
//! spec `ibe-sip-tunnel.md` sections 1-4) over BLS12-381.
//!
//! What lives here and nowhere else:
//! - the encodings of section 1 ([`encoding`]), the hash functions and domain
//!   separation tags ([`hash`]);
//! - identities (canonical AOR plus key period, section 2: `identity`);
//! - setup / extract / key check (3.1: `keys`);
//! - Boneh-Franklin FullIdent key transport (3.2: [`bf`]);
//! - Cha-Cheon signatures (3.3: [`cc`]);
//! - the public parameter document and its fingerprint (4: `params`);
//! - a master secret shared t-of-n among PKG servers: splitting, checking
//!   and combining shares (pkg-api.md "Threshold provider": [`threshold`]);
//! - constant-time fixed-base tables that make the operations fast
//!   ([`fixed_base`]), and short multi-scalar multiplication for the
//!   random-weighted batch key checks (`msm`).
//!
//! Every secret (master secret, private keys, their tables) zeroizes on drop
//! and prints as `[redacted]`.

pub mod bf;
pub mod cc;
pub mod dkg;
pub mod encoding;
mod error;
pub mod fingerprint;
pub mod fixed_base;
pub mod hash;
pub(crate) mod identity;
pub mod kat;
pub(crate) mod keys;
mod msm;
pub(crate) mod params;
mod random;
pub mod threshold;

pub use bf::{decrypt, encrypt, Ciphertext, DecryptionKey, RecipientCache};
pub use cc::{sign, verify, Signature, SignerCache, SigningKey};
pub use error::IbeError;
pub use identity::{Aor, Identity, Period};
pub use keys::{
    check_key, check_keys, extract, setup, MasterSecret, PreparedIdentity, PrivateKeys,
};
pub use params::{MediaKeysPolicy, PublicParams, SUITE};
