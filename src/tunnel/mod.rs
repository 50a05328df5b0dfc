//! The S/MIME-style SIP tunnel (spec section 5).
pub mod cms;
pub mod oids;
