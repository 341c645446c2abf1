//! feedscope's own hypercore: the Merkle tree of a feed and its storage on disk.
//!
//! - [`flat`]: flat-tree indexes;
//! - [`hash`]: BLAKE2b hashes and Ed25519 signatures, in hypercore 10's or 9's [`Flavour`];
//! - [`tree`]: appending, making proofs for peers and checking theirs, without I/O;
//! - [`hc9`]: the proofs of hypercore 9's wire (Cabal), over the same tree;
//! - [`bitfield`]: which blocks are held, in pages kept only where bits are set;
//! - [`disk`]: one feed's files and their commit protocol.
//!
//! The flavour is chosen per feed: the same code serves hypercore 10 peers and the hypercore
//! 9 feeds of Cabal's wire.

pub mod bitfield;
pub mod disk;
pub mod flat;
pub mod hash;
pub mod hc9;
pub mod tree;

pub use disk::{Core, CoreError, Info};
pub use hash::{Flavour, Hash, Node};
pub use tree::{
    BlockProof, HashProof, NodeSource, Proof, ProofError, Request, Tree, UpgradeProof, Verified,
    Want, MAX_LENGTH,
};
