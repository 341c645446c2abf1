//! Tree nodes in memory, kept in the aligned runs of [`RUN`] nodes in which the tree file
//! stores and reads them: one map lookup finds a run, and a bit in it says whether a node
//! is there. Nodes staged by a commit move into the cache a run at a time.

use std::collections::HashMap;

use crate::core::hash::Node;

/// Nodes per run: the nodes read from `tree` at once.
pub const RUN: u64 = 64;

/// A node's place in its run.
fn place(index: u64) -> (u64, usize) {
    (index / RUN, (index % RUN) as usize)
}

/// One aligned run of [`RUN`] nodes, or what is known of it.
#[derive(Default)]
struct Run {
    /// Bit `i`: the run's node `i` is here.
    present: u64,
    /// Read whole from the file: a node not here is not in the file either.
    complete: bool,
    /// The nodes; none until one is here (a run known to be empty costs no more).
    nodes: Option<Box<[Node; RUN as usize]>>,
}

impl Run {
    fn put(&mut self, at: usize, node: Node) {
        let nodes = self.nodes.get_or_insert_with(|| {
            Box::new(
                [Node {
                    index: 0,
                    size: 0,
                    hash: [0; 32],
                }; RUN as usize],
            )
        });
        nodes[at] = node;
        self.present |= 1 << at;
    }
}

/// What a map of runs knows of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// It is here.
    Found(Node),
    /// Its run was read whole and it was not in it.
    Absent,
    /// Nothing is known: read its run.
    Unknown,
}

/// Nodes by flat index, a run at a time. Run numbers are tree positions, so a fast hash is
/// enough; the per-process seed keeps it from being steered.
#[derive(Default)]
pub struct NodeRuns {
    runs: HashMap<u64, Run, crate::FastHash>,
    /// Runs that hold nodes (each holds a box of [`RUN`] of them).
    filled: usize,
}

impl NodeRuns {
    /// What is known of node `index`.
    pub fn get(&self, index: u64) -> Lookup {
        let (run, at) = place(index);
        match self.runs.get(&run) {
            Some(r) if r.present & (1 << at) != 0 => {
                Lookup::Found(r.nodes.as_ref().expect("a run with nodes has its box")[at])
            }
            Some(r) if r.complete => Lookup::Absent,
            _ => Lookup::Unknown,
        }
    }

    /// Node `index` if it is here.
    pub fn node(&self, index: u64) -> Option<Node> {
        match self.get(index) {
            Lookup::Found(n) => Some(n),
            _ => None,
        }
    }

    /// Puts a node here, in place of any held at its index.
    pub fn insert(&mut self, node: Node) {
        let (run, at) = place(node.index);
        let r = self.runs.entry(run).or_default();
        if r.nodes.is_none() {
            self.filled += 1;
        }
        r.put(at, node);
    }

    /// Records run `run` as read whole from the file, holding `nodes` (those of it the file
    /// holds). Nodes already here stay: the file holds the same ones.
    pub fn fill(&mut self, run: u64, nodes: impl IntoIterator<Item = Node>) {
        let r = self.runs.entry(run).or_default();
        let had_box = r.nodes.is_some();
        for node in nodes {
            let (_, at) = place(node.index);
            if r.present & (1 << at) == 0 {
                r.put(at, node);
            }
        }
        r.complete = true;
        if !had_box && r.nodes.is_some() {
            self.filled += 1;
        }
    }

    /// Runs known here, with nodes or known to be empty.
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    /// Runs that hold nodes: what the memory grows with.
    pub fn filled(&self) -> usize {
        self.filled
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.runs.clear();
        self.filled = 0;
    }

    /// The nodes, in ascending index order.
    pub fn sorted(&self) -> impl Iterator<Item = Node> + '_ {
        let mut keys: Vec<u64> = self
            .runs
            .iter()
            .filter(|(_, r)| r.present != 0)
            .map(|(k, _)| *k)
            .collect();
        keys.sort_unstable();
        keys.into_iter().flat_map(move |k| {
            let r = &self.runs[&k];
            let nodes = r.nodes.as_ref().expect("a run with nodes has its box");
            (0..RUN as usize)
                .filter(move |&at| r.present & (1 << at) != 0)
                .map(move |at| nodes[at])
        })
    }

    /// Takes in the runs of `other` (nodes just written to the file): whole runs move,
    /// and a run known here takes their nodes.
    pub fn absorb(&mut self, other: NodeRuns) {
        for (k, theirs) in other.runs {
            let Some(nodes) = theirs.nodes else { continue };
            match self.runs.get_mut(&k) {
                None => {
                    self.filled += 1;
                    self.runs.insert(
                        k,
                        Run {
                            present: theirs.present,
                            complete: false,
                            nodes: Some(nodes),
                        },
                    );
                }
                Some(mine) => {
                    if mine.nodes.is_none() {
                        self.filled += 1;
                    }
                    for at in 0..RUN as usize {
                        if theirs.present & (1 << at) != 0 {
                            mine.put(at, nodes[at]);
                        }
                    }
                }
            }
        }
    }

    /// Forgets the runs that `other` has nodes in, so that they are read again.
    pub fn forget_runs_of(&mut self, other: &NodeRuns) {
        for (k, r) in &other.runs {
            if r.present != 0 {
                if let Some(mine) = self.runs.remove(k) {
                    if mine.nodes.is_some() {
                        self.filled -= 1;
                    }
                }
            }
        }
    }
}

impl Extend<Node> for NodeRuns {
    fn extend<I: IntoIterator<Item = Node>>(&mut self, nodes: I) {
        for node in nodes {
            self.insert(node);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn node(index: u64) -> Node {
        Node {
            index,
            size: index * 3 + 1,
            hash: [(index % 251) as u8; 32],
        }
    }

    #[test]
    fn found_absent_and_unknown() {
        let mut m = NodeRuns::default();
        assert_eq!(m.get(5), Lookup::Unknown);
        m.insert(node(5));
        assert_eq!(m.get(5), Lookup::Found(node(5)));
        assert_eq!(
            m.get(6),
            Lookup::Unknown,
            "a run not read whole knows nothing else"
        );
        m.fill(0, [node(7)]);
        assert_eq!(m.get(6), Lookup::Absent);
        assert_eq!(m.get(7), Lookup::Found(node(7)));
        assert_eq!(m.get(5), Lookup::Found(node(5)));
        m.fill(3, []);
        assert_eq!(m.get(3 * RUN + 1), Lookup::Absent);
        assert_eq!((m.runs(), m.filled()), (2, 1), "an empty run holds no box");
    }

    proptest::proptest! {
        /// Whatever is inserted, absorbed and forgotten, the map answers as a plain map of
        /// nodes would, and `sorted` lists it in order.
        #[test]
        fn runs_answer_as_a_plain_map(
            first in proptest::collection::vec(0u64..1_000, 0..200),
            second in proptest::collection::vec(0u64..1_000, 0..200),
            forget in proptest::bool::ANY,
        ) {
            let mut a = NodeRuns::default();
            let mut plain = BTreeMap::new();
            for &i in &first {
                a.insert(node(i));
                plain.insert(i, node(i));
            }
            let mut b = NodeRuns::default();
            let mut staged = BTreeMap::new();
            for &i in &second {
                b.insert(node(i));
                staged.insert(i, node(i));
            }
            let listed: Vec<Node> = b.sorted().collect();
            proptest::prop_assert_eq!(listed, staged.values().copied().collect::<Vec<_>>());
            if forget {
                a.forget_runs_of(&b);
                plain.retain(|i, _| !staged.keys().any(|s| s / RUN == i / RUN));
            } else {
                a.absorb(b);
                plain.extend(staged);
            }
            for i in 0..1_100 {
                proptest::prop_assert_eq!(a.node(i), plain.get(&i).copied());
            }
            let runs_with_nodes: std::collections::BTreeSet<u64> =
                plain.keys().map(|i| i / RUN).collect();
            proptest::prop_assert_eq!(a.filled(), runs_with_nodes.len());
        }
    }
}
