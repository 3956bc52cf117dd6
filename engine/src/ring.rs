//! The consistent-hash ring that places virtual shards on nodes.
//!
//! This module owns shard placement: given the cluster's node names, which node
//! owns each virtual shard. Every gateway builds its [`Ring`] from the same node
//! list and must reach the same answer, in any process, after any restart, so:
//!
//! - all positions come from [`stable_hash64`] (never a randomly seeded hasher);
//! - construction is order-independent: nodes are sorted by name, and points that
//!   land on the same hash are ordered by node name;
//! - the ring is plain data: membership changes ([`Ring::with_node`],
//!   [`Ring::without_node`]) return a new ring rather than mutating a shared one.
//!
//! Each node is placed at `vnodes_per_node` points, `stable_hash64("{node}#{i}")`
//! for `i in 0..vnodes_per_node`. A shard sits at `stable_hash64("shard-{shard}")`
//! and is owned by the node of the first point at or clockwise after it, wrapping
//! past `u64::MAX` to the first point. Adding a node therefore only takes shards
//! *to* the new node, and removing one only hands *its* shards to the others.

use std::fmt::{self, Write as _};

use crate::hash::stable_hash64;

/// Default number of points (virtual nodes) each node gets on the ring.
///
/// A node's share of the ring is the sum of `V` arcs, so its relative spread is about
/// `1/sqrt(V)`: 256 points give roughly ±6% (one standard deviation), which, with
/// the variance of where shards themselves fall, keeps every node within about ±10%
/// of its fair share once there are a few thousand shards. More points buy little
/// balance (the spread shrinks only as the square root) but cost memory and build
/// time linearly: at [`NODES_MAX`] nodes this is 262,144 points (about 4 MiB) and
/// 18 comparisons per lookup, still trivial for a structure built on membership
/// changes only.
pub const VNODES_PER_NODE_DEFAULT: u32 = 256;

/// Upper bound on the number of nodes in a ring. A holdfast cluster is a handful
/// to a few dozen nodes; the bound exists so a malformed node list cannot make a
/// gateway allocate an unbounded ring.
pub const NODES_MAX: usize = 1024;

/// Upper bound on virtual nodes per node, for the same reason as [`NODES_MAX`]:
/// `NODES_MAX * VNODES_PER_NODE_MAX` points (4 Mi, about 64 MiB) is the largest
/// ring that can ever be built.
pub const VNODES_PER_NODE_MAX: u32 = 4096;

/// Why a [`Ring`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingError {
    /// The node list is empty (or removing the node would empty it).
    NoNodes,
    /// `vnodes_per_node` is zero.
    ZeroVnodes,
    /// `vnodes_per_node` exceeds [`VNODES_PER_NODE_MAX`].
    TooManyVnodes {
        /// The requested virtual nodes per node.
        vnodes_per_node: u32,
    },
    /// More than [`NODES_MAX`] nodes.
    TooManyNodes {
        /// The number of nodes requested.
        count: usize,
    },
    /// A node name is the empty string.
    EmptyNodeName,
    /// The same node name appears twice.
    DuplicateNode(String),
    /// [`Ring::without_node`] was asked to remove a node that is not in the ring.
    UnknownNode(String),
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoNodes => write!(f, "a ring needs at least one node"),
            Self::ZeroVnodes => write!(f, "vnodes_per_node must be at least 1"),
            Self::TooManyVnodes { vnodes_per_node } => write!(
                f,
                "vnodes_per_node {vnodes_per_node} exceeds the maximum of {VNODES_PER_NODE_MAX}"
            ),
            Self::TooManyNodes { count } => {
                write!(f, "{count} nodes exceed the maximum of {NODES_MAX}")
            }
            Self::EmptyNodeName => write!(f, "node names must not be empty"),
            Self::DuplicateNode(node) => write!(f, "node {node:?} appears more than once"),
            Self::UnknownNode(node) => write!(f, "node {node:?} is not in the ring"),
        }
    }
}

impl std::error::Error for RingError {}

/// One virtual node: a position on the ring and the index (into the sorted node
/// list) of the node that owns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Point {
    hash: u64,
    node_index: u32,
}

/// A consistent-hash ring with virtual nodes, mapping shards to node names.
///
/// Serializes (for operator endpoints) as `{"nodes": [...], "vnodes_per_node": n}`;
/// the points are derived data and are not serialized.
#[derive(Clone, PartialEq, Eq, serde::Serialize)]
pub struct Ring {
    /// Node names, sorted and unique.
    nodes: Vec<String>,
    vnodes_per_node: u32,
    /// `nodes.len() * vnodes_per_node` points, sorted by `(hash, node_index)`;
    /// because `nodes` is sorted, ties on hash are broken by node name.
    #[serde(skip)]
    points: Vec<Point>,
}

impl fmt::Debug for Ring {
    // Hand-written so that logging a ring prints its membership, not up to
    // hundreds of thousands of points.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("nodes", &self.nodes)
            .field("vnodes_per_node", &self.vnodes_per_node)
            .field("points_len", &self.points.len())
            .finish()
    }
}

impl Ring {
    /// Builds a ring from node names, placing each at `vnodes_per_node` points.
    ///
    /// The order of `nodes` does not matter.
    ///
    /// # Errors
    ///
    /// [`RingError::NoNodes`] for an empty list, [`RingError::EmptyNodeName`],
    /// [`RingError::DuplicateNode`], [`RingError::TooManyNodes`] above
    /// [`NODES_MAX`], [`RingError::ZeroVnodes`] and [`RingError::TooManyVnodes`]
    /// above [`VNODES_PER_NODE_MAX`].
    pub fn new(
        nodes: impl IntoIterator<Item = impl Into<String>>,
        vnodes_per_node: u32,
    ) -> Result<Ring, RingError> {
        if vnodes_per_node == 0 {
            return Err(RingError::ZeroVnodes);
        }
        if vnodes_per_node > VNODES_PER_NODE_MAX {
            return Err(RingError::TooManyVnodes { vnodes_per_node });
        }
        // Collect at most one past the bound, so a huge iterator is not drained
        // into memory just to be rejected.
        let mut nodes: Vec<String> = nodes
            .into_iter()
            .map(Into::into)
            .take(NODES_MAX + 1)
            .collect();
        if nodes.is_empty() {
            return Err(RingError::NoNodes);
        }
        if nodes.len() > NODES_MAX {
            return Err(RingError::TooManyNodes { count: nodes.len() });
        }
        if nodes.iter().any(String::is_empty) {
            return Err(RingError::EmptyNodeName);
        }
        nodes.sort_unstable();
        if let Some(pair) = nodes.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(RingError::DuplicateNode(pair[0].clone()));
        }
        let points = build_points(&nodes, vnodes_per_node);
        Ok(Ring {
            nodes,
            vnodes_per_node,
            points,
        })
    }

    /// The one-node ring used by an embedded (single-process) engine: `node` owns
    /// every shard. Uses [`VNODES_PER_NODE_DEFAULT`] so that the ring equals one
    /// built by [`Ring::new`] from the same single node.
    ///
    /// # Panics
    ///
    /// Panics if `node` is empty.
    #[must_use]
    pub fn single(node: &str) -> Ring {
        match Ring::new([node], VNODES_PER_NODE_DEFAULT) {
            Ok(ring) => ring,
            Err(err) => panic!("Ring::single({node:?}): {err}"),
        }
    }

    /// The node names, sorted.
    #[must_use]
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// Virtual nodes (ring points) per node.
    #[must_use]
    pub fn vnodes_per_node(&self) -> u32 {
        self.vnodes_per_node
    }

    /// The node that owns `shard`: the node of the first point at or clockwise
    /// after `stable_hash64("shard-{shard}")`, wrapping around. O(log points).
    #[must_use]
    pub fn owner(&self, shard: u32) -> &str {
        let position = stable_hash64(format!("shard-{shard}").as_bytes());
        // First point with hash >= position; among equal hashes that is the lowest
        // node name, which keeps ties deterministic.
        let index = self.points.partition_point(|point| point.hash < position);
        // Past the last point: wrap to the first. `points` is never empty.
        let point = self.points.get(index).unwrap_or(&self.points[0]);
        &self.nodes[point.node_index as usize]
    }

    /// The owner of every shard in `0..shards`; index = shard.
    #[must_use]
    pub fn assignment(&self, shards: u32) -> Vec<&str> {
        (0..shards).map(|shard| self.owner(shard)).collect()
    }

    /// A new ring with `node` added and the same `vnodes_per_node`.
    ///
    /// # Errors
    ///
    /// As [`Ring::new`]: duplicate or empty name, or more than [`NODES_MAX`] nodes.
    pub fn with_node(&self, node: impl Into<String>) -> Result<Ring, RingError> {
        let nodes = self
            .nodes
            .iter()
            .cloned()
            .chain(std::iter::once(node.into()));
        Ring::new(nodes, self.vnodes_per_node)
    }

    /// A new ring with `node` removed and the same `vnodes_per_node`.
    ///
    /// # Errors
    ///
    /// [`RingError::UnknownNode`] if `node` is not in the ring,
    /// [`RingError::NoNodes`] if it is the last node.
    pub fn without_node(&self, node: &str) -> Result<Ring, RingError> {
        if !self.nodes.iter().any(|existing| existing == node) {
            return Err(RingError::UnknownNode(node.to_owned()));
        }
        let nodes = self
            .nodes
            .iter()
            .filter(|existing| *existing != node)
            .cloned();
        Ring::new(nodes, self.vnodes_per_node)
    }
}

/// All points of a ring over sorted, unique, bounded `nodes`, sorted by
/// `(hash, node_index)`.
fn build_points(nodes: &[String], vnodes_per_node: u32) -> Vec<Point> {
    let mut points = Vec::with_capacity(nodes.len() * vnodes_per_node as usize);
    let mut label = String::new();
    for (node_index, node) in nodes.iter().enumerate() {
        let node_index = u32::try_from(node_index).expect("node count is bounded by NODES_MAX");
        for vnode in 0..vnodes_per_node {
            label.clear();
            // `{node}#{vnode}` is unambiguous even if a name contains '#': the
            // suffix after the last '#' is always the decimal vnode number.
            write!(label, "{node}#{vnode}").expect("writing to a String cannot fail");
            points.push(Point {
                hash: stable_hash64(label.as_bytes()),
                node_index,
            });
        }
    }
    points.sort_unstable();
    points
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Shard count for the balance and movement tests. With the default 64 shards
    /// the granularity alone limits balance: 64 / 5 nodes = 12.8 shards per node,
    /// so one shard more or less is already ±8%, and sampling noise (about ±3
    /// shards) dwarfs any ring property. 8192 shards make the shard-sampling noise
    /// small (about ±3% per node) so the tests measure the ring itself.
    const SHARDS: u32 = 8192;

    fn five_nodes() -> Ring {
        Ring::new(
            ["node-1", "node-2", "node-3", "node-4", "node-5"],
            VNODES_PER_NODE_DEFAULT,
        )
        .unwrap()
    }

    fn counts<'a>(assignment: &[&'a str]) -> BTreeMap<&'a str, u32> {
        let mut counts = BTreeMap::new();
        for &node in assignment {
            *counts.entry(node).or_insert(0) += 1;
        }
        counts
    }

    #[test]
    fn five_nodes_share_shards_within_ten_percent() {
        let ring = five_nodes();
        let counts = counts(&ring.assignment(SHARDS));
        assert_eq!(counts.len(), 5, "every node owns some shard: {counts:?}");
        let fair = f64::from(SHARDS) / 5.0;
        for (node, &count) in &counts {
            let deviation = f64::from(count) / fair - 1.0;
            eprintln!(
                "balance: {node} owns {count} of {SHARDS} shards ({:+.2}% vs fair {fair})",
                deviation * 100.0
            );
            assert!(
                deviation.abs() <= 0.10,
                "{node} owns {count} shards, {:+.1}% off the fair share {fair}",
                deviation * 100.0
            );
        }
    }

    #[test]
    fn adding_a_node_moves_about_a_sixth_and_only_to_it() {
        let before = five_nodes();
        let after = before.with_node("node-6").unwrap();
        let (old, new) = (before.assignment(SHARDS), after.assignment(SHARDS));
        let mut moved = 0_u32;
        for (shard, (&was, &is)) in old.iter().zip(&new).enumerate() {
            if was != is {
                moved += 1;
                assert_eq!(is, "node-6", "shard {shard} moved {was} -> {is}");
            }
        }
        let moved_fraction = f64::from(moved) / f64::from(SHARDS);
        eprintln!(
            "add node-6: {moved} of {SHARDS} shards moved ({:.2}%, ideal 16.67%)",
            moved_fraction * 100.0
        );
        assert!(
            (0.12..=0.22).contains(&moved_fraction),
            "{:.1}% of shards moved, expected about 1/6",
            moved_fraction * 100.0
        );
    }

    #[test]
    fn removing_a_node_moves_only_its_shards() {
        let before = five_nodes();
        let after = before.without_node("node-3").unwrap();
        assert_eq!(after.nodes(), ["node-1", "node-2", "node-4", "node-5"]);
        let (old, new) = (before.assignment(SHARDS), after.assignment(SHARDS));
        let mut moved = 0_u32;
        for (shard, (&was, &is)) in old.iter().zip(&new).enumerate() {
            if was == "node-3" {
                moved += 1;
                assert_ne!(is, "node-3");
            } else {
                assert_eq!(was, is, "shard {shard} moved {was} -> {is}");
            }
        }
        eprintln!(
            "remove node-3: {moved} of {SHARDS} shards moved ({:.2}%)",
            f64::from(moved) / f64::from(SHARDS) * 100.0
        );
        assert!(moved > 0, "node-3 owned nothing before removal");
    }

    #[test]
    fn add_then_remove_restores_the_ring() {
        let ring = five_nodes();
        let round_trip = ring
            .with_node("node-6")
            .unwrap()
            .without_node("node-6")
            .unwrap();
        assert_eq!(round_trip, ring);
        assert_eq!(round_trip.assignment(SHARDS), ring.assignment(SHARDS));
    }

    #[test]
    fn single_node_owns_every_shard() {
        let ring = Ring::single("local");
        assert_eq!(ring.nodes(), ["local"]);
        assert_eq!(ring.vnodes_per_node(), VNODES_PER_NODE_DEFAULT);
        assert!(ring.assignment(4096).iter().all(|&node| node == "local"));
        assert_eq!(ring.owner(u32::MAX), "local");
    }

    #[test]
    fn placement_is_independent_of_node_order() {
        let forward = Ring::new(["a", "b", "c", "d", "e"], 64).unwrap();
        let shuffled = Ring::new(vec!["d", "a", "e", "c", "b"], 64).unwrap();
        assert_eq!(forward.nodes(), shuffled.nodes());
        assert_eq!(forward.assignment(SHARDS), shuffled.assignment(SHARDS));
        assert_eq!(forward, shuffled);
    }

    /// Pins a few owners so a change to the point or shard labels (not only to the
    /// hash) is caught: placement decides where data lives.
    #[test]
    fn placement_known_answers() {
        let ring = five_nodes();
        let pinned: Vec<&str> = (0..8).map(|shard| ring.owner(shard)).collect();
        assert_eq!(pinned, KAT_FIVE_NODES_FIRST_8);
    }

    #[test]
    fn owner_matches_a_linear_scan() {
        let ring = Ring::new(["x", "y", "z"], 16).unwrap();
        for shard in 0..2048 {
            let position = stable_hash64(format!("shard-{shard}").as_bytes());
            let point = ring
                .points
                .iter()
                .find(|point| point.hash >= position)
                .unwrap_or(&ring.points[0]);
            assert_eq!(ring.owner(shard), ring.nodes[point.node_index as usize]);
        }
    }

    #[test]
    fn rejects_invalid_input() {
        let no_nodes: [&str; 0] = [];
        assert_eq!(Ring::new(no_nodes, 8).unwrap_err(), RingError::NoNodes);
        assert_eq!(
            Ring::new(["a", "b", "a"], 8).unwrap_err(),
            RingError::DuplicateNode("a".to_owned())
        );
        assert_eq!(
            Ring::new(["a", ""], 8).unwrap_err(),
            RingError::EmptyNodeName
        );
        assert_eq!(Ring::new(["a"], 0).unwrap_err(), RingError::ZeroVnodes);
        assert_eq!(
            Ring::new(["a"], VNODES_PER_NODE_MAX + 1).unwrap_err(),
            RingError::TooManyVnodes {
                vnodes_per_node: VNODES_PER_NODE_MAX + 1
            }
        );
        let too_many = (0..=NODES_MAX).map(|i| format!("n{i}"));
        assert_eq!(
            Ring::new(too_many, 1).unwrap_err(),
            RingError::TooManyNodes {
                count: NODES_MAX + 1
            }
        );
        assert!(Ring::new((0..NODES_MAX).map(|i| format!("n{i}")), 1).is_ok());

        let ring = Ring::new(["a", "b"], 8).unwrap();
        assert_eq!(
            ring.with_node("a").unwrap_err(),
            RingError::DuplicateNode("a".to_owned())
        );
        assert_eq!(
            ring.without_node("zz").unwrap_err(),
            RingError::UnknownNode("zz".to_owned())
        );
        let last = ring.without_node("a").unwrap();
        assert_eq!(last.without_node("b").unwrap_err(), RingError::NoNodes);
        // Errors are displayable for operators.
        assert_eq!(
            RingError::DuplicateNode("a".to_owned()).to_string(),
            "node \"a\" appears more than once"
        );
    }

    /// The operator view is membership only: `Debug` (and the derived `Serialize`,
    /// whose points field is `#[serde(skip)]`) must not dump the points.
    #[test]
    fn debug_shows_membership_not_points() {
        let ring = Ring::new(["b", "a"], 32).unwrap();
        assert_eq!(
            format!("{ring:?}"),
            r#"Ring { nodes: ["a", "b"], vnodes_per_node: 32, points_len: 64 }"#
        );
    }

    /// Owners of shards 0..8 on the five-node default ring, computed once (and
    /// cross-checked with an independent implementation) and pinned.
    const KAT_FIVE_NODES_FIRST_8: [&str; 8] = [
        "node-3", "node-4", "node-1", "node-5", "node-3", "node-5", "node-5", "node-1",
    ];
}
