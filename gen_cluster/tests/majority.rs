//! The `majority` election mode over real nodes in one process, with the global dictionary as
//! its behaviour: one leader per term, agreed by all; a write's `Ok` only once a quorum of the
//! voters holds it; a leader cut from its voters never acknowledges and is replaced in a later
//! term; the minority side fails calls with `NoQuorum` instead of waiting; a restarted voter
//! keeps its term on disk and catches up; a leader that shuts down hands over; a node started
//! with other voters, or a voter with another lease setting, stops the election while it is
//! connected; the settings that cannot run are refused at start. Scenarios on the in-memory
//! network run in paused time, where cuts hold bytes as a hung link does.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[macro_use]
mod common;

use std::path::Path;
use std::time::Duration;

use common::{HANG, Net, ScratchDir, scratch_dir};
use gen_cluster::services::dict::{Dict, Read, ReadReply, Request, Write};
use gen_cluster::{
    DataDirError, ElectionId, ElectionMode, Fence, Leader, LeaderCallError, LeaderConfig, Node,
    NodeName, StartError,
};
use tokio::time::Instant;

const T: Duration = Duration::from_secs(5);
/// The election timeout of these tests.
const ELECTION_TIMEOUT: Duration = Duration::from_millis(500);

fn names(nodes: &[Node]) -> Vec<NodeName> {
    nodes.iter().map(|n| n.name().clone()).collect()
}

fn majority_config(voters: &[NodeName], data_dir: &Path) -> LeaderConfig {
    let mut config = LeaderConfig::new("dict", voters.to_vec());
    config.mode = ElectionMode::Majority;
    config.election_timeout = ELECTION_TIMEOUT;
    config.heartbeat = Duration::from_millis(100);
    config.data_dir = Some(data_dir.to_path_buf());
    config
}

/// The dictionary in `majority` mode among `voters` on `node`, keeping its term in `dir`.
async fn start_dict(node: &Node, voters: &[NodeName], dir: &Path) -> Leader<Dict> {
    Leader::start(node, majority_config(voters, dir), Dict::default())
        .await
        .unwrap()
}

/// The dictionary on every node, all of them voters, each with a data directory of its own.
async fn start_dicts(nodes: &[Node]) -> (Vec<Leader<Dict>>, Vec<ScratchDir>) {
    start_dicts_among(nodes, &names(nodes)).await
}

/// The dictionary among `voters` on every node, each with a data directory of its own (to hold
/// while they run).
async fn start_dicts_among(
    nodes: &[Node],
    voters: &[NodeName],
) -> (Vec<Leader<Dict>>, Vec<ScratchDir>) {
    start_dicts_with(nodes, voters, |_| {}).await
}

/// [`start_dicts_among`], each node's settings changed by `configure` first.
async fn start_dicts_with(
    nodes: &[Node],
    voters: &[NodeName],
    configure: impl Fn(&mut LeaderConfig),
) -> (Vec<Leader<Dict>>, Vec<ScratchDir>) {
    let mut dicts = Vec::new();
    let mut dirs = Vec::new();
    for node in nodes {
        let dir = scratch_dir("majority");
        let mut config = majority_config(voters, &dir);
        configure(&mut config);
        dicts.push(Leader::start(node, config, Dict::default()).await.unwrap());
        dirs.push(dir);
    }
    (dicts, dirs)
}

/// Which of `nodes` leads `election`.
fn leader_of(nodes: &[Node], election: &ElectionId) -> usize {
    nodes
        .iter()
        .position(|n| *n.name() == election.leader)
        .expect("a leader among the nodes")
}

fn followed(dict: &Leader<Dict>) -> Option<ElectionId> {
    dict.leader_changes().unwrap().borrow().clone()
}

/// Waits until every one of `dicts` follows the same election, and returns it. Polled: the
/// nodes' watches change in turn, with no single event to wait on.
async fn agreed(dicts: &[&Leader<Dict>]) -> ElectionId {
    agreed_after(dicts, 0).await
}

/// Waits until every one of `dicts` follows the same election, of a term after `term`.
async fn agreed_after(dicts: &[&Leader<Dict>], term: u64) -> ElectionId {
    tokio::time::timeout(HANG, async {
        loop {
            let first = followed(dicts[0]);
            if let Some(election) = &first
                && election.term > term
                && dicts.iter().all(|d| followed(d) == first)
            {
                return election.clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the nodes agree on one election")
}

async fn value(dict: &Leader<Dict>, key: &str) -> Option<String> {
    match dict.call(Read::Get(key.into()), T).await.unwrap() {
        ReadReply::Value(value) => value,
        other => panic!("unexpected {other:?}"),
    }
}

fn put(key: &str, value: &str) -> Request {
    Write::Put(key.into(), value.into()).into()
}

async fn three_voters_agree_on_one_leader_and_an_acknowledged_write_is_held_by_a_quorum(net: Net) {
    let nodes = net.loner_mesh(&["a", "b", "c"]).await;
    let (dicts, _dirs) = start_dicts(&nodes).await;
    let all: Vec<&Leader<Dict>> = dicts.iter().collect();
    let election = agreed(&all).await;
    assert!(election.term >= 1, "{election}");
    for dict in &dicts {
        assert_eq!(dict.term(), election.term, "every handle reads the term");
    }
    for i in 0..20 {
        let key = format!("k{i}");
        let (_, term) = dicts[i % 3]
            .leader_call_with_term(put(&key, "v"), T)
            .await
            .unwrap();
        assert_eq!(term, election.term, "the reply carries the leader's term");
        let mut holders = 0;
        for dict in &dicts {
            holders += usize::from(value(dict, &key).await.as_deref() == Some("v"));
        }
        assert!(
            holders >= 2,
            "{key} acknowledged while {holders} of 3 held it"
        );
    }
}

async fn a_leader_cut_from_its_voters_never_acknowledges_and_the_rest_elect_a_later_term(
    network: Net,
) {
    let Net::Memory(memory) = &network else {
        unreachable!("a cut that holds bytes needs the in-memory network")
    };
    let nodes = network.loner_mesh(&["a", "b", "c"]).await;
    let (dicts, _dirs) = start_dicts(&nodes).await;
    let all: Vec<&Leader<Dict>> = dicts.iter().collect();
    let first = agreed(&all).await;
    let old = leader_of(&nodes, &first);
    let rest: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    dicts[rest[0]]
        .leader_call(put("before", "0"), T)
        .await
        .unwrap();

    // The old leader's links hang: what it sends is held, as on a dead cable.
    for &i in &rest {
        memory.cut(nodes[old].name().as_str(), nodes[i].name().as_str());
    }
    let during_cut = dicts[old].leader_call(put("cut-off", "1"), T).await;
    assert!(
        matches!(
            during_cut,
            Err(LeaderCallError::LeaderDied | LeaderCallError::NoQuorum)
        ),
        "a leader without its quorum acknowledged a write: {during_cut:?}"
    );

    let majority: Vec<&Leader<Dict>> = rest.iter().map(|&i| &dicts[i]).collect();
    let second = agreed_after(&majority, first.term).await;
    assert_ne!(second.leader, first.leader);
    dicts[rest[1]]
        .leader_call(put("after", "2"), T)
        .await
        .unwrap();

    // Once the old leader's node has seen its links go, its calls fail at once.
    tokio::time::timeout(HANG, async {
        while !nodes[old].peers().is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();
    let asked = Instant::now();
    let refused = dicts[old].leader_call(put("minority", "3"), T).await;
    assert_eq!(refused, Err(LeaderCallError::NoQuorum));
    assert!(
        asked.elapsed() < ELECTION_TIMEOUT,
        "the minority side answered in {:?}",
        asked.elapsed()
    );

    memory.heal_all();
    for &i in &rest {
        common::connect(&nodes[old], &nodes[i]).await;
    }
    let healed = agreed(&all).await;
    assert!(healed.term >= second.term);
    let expected = [
        ("after", Some("2")),
        ("before", Some("0")),
        ("cut-off", None),
    ];
    tokio::time::timeout(HANG, async {
        loop {
            let mut held = Vec::new();
            for (key, _) in expected {
                held.push(value(&dicts[old], key).await);
            }
            let wanted: Vec<Option<String>> = expected
                .iter()
                .map(|(_, v)| v.map(str::to_string))
                .collect();
            if held == wanted {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the returning node holds every acknowledged write, and not the refused one");
}

#[tokio::test(start_paused = true)]
async fn a_leader_cut_from_its_voters_never_acknowledges_and_the_rest_elect_a_later_term_memory() {
    a_leader_cut_from_its_voters_never_acknowledges_and_the_rest_elect_a_later_term(Net::memory())
        .await
}

async fn a_restarted_voter_keeps_its_term_and_catches_up(net: Net) {
    let nodes = net.loner_mesh(&["a", "b", "c"]).await;
    let voters = names(&nodes);
    let (dicts, dirs) = start_dicts(&nodes).await;
    let all: Vec<&Leader<Dict>> = dicts.iter().collect();
    let election = agreed(&all).await;
    let follower = nodes
        .iter()
        .position(|n| *n.name() != election.leader)
        .unwrap();
    dicts[follower]
        .leader_call(put("kept", "1"), T)
        .await
        .unwrap();

    nodes[follower].shutdown().await;
    let others: Vec<usize> = (0..3).filter(|i| *i != follower).collect();
    dicts[others[0]]
        .leader_call(put("while-away", "2"), T)
        .await
        .unwrap();

    let name = nodes[follower].name().as_str().to_string();
    let back = net.start(common::loner_config(&name)).await;
    let dict = start_dict(&back, &voters, &dirs[follower]).await;
    assert!(
        dict.term() >= election.term,
        "the term was read back from disk: {} < {}",
        dict.term(),
        election.term
    );
    for &i in &others {
        common::connect(&back, &nodes[i]).await;
    }
    let rejoined = agreed(&[&dict, &dicts[others[0]], &dicts[others[1]]]).await;
    assert!(rejoined.term >= election.term);
    tokio::time::timeout(HANG, async {
        while value(&dict, "while-away").await.is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the restarted voter catches up");
    assert_eq!(value(&dict, "kept").await.as_deref(), Some("1"));
}

async fn a_leader_that_shuts_down_hands_over_and_the_fence_refuses_its_term(net: Net) {
    let nodes = net.loner_mesh(&["a", "b", "c"]).await;
    let (dicts, _dirs) = start_dicts(&nodes).await;
    let all: Vec<&Leader<Dict>> = dicts.iter().collect();
    let first = agreed(&all).await;
    let fence = Fence::new();
    fence.admit(first.term).unwrap();

    let old = leader_of(&nodes, &first);
    nodes[old].shutdown().await;
    let rest: Vec<&Leader<Dict>> = (0..3).filter(|i| *i != old).map(|i| &dicts[i]).collect();
    let second = agreed_after(&rest, first.term).await;
    let (_, term) = rest[0]
        .leader_call_with_term(put("next", "1"), T)
        .await
        .unwrap();
    assert_eq!(term, second.term);
    fence.admit(term).unwrap();
    assert!(
        fence.admit(first.term).is_err(),
        "an act of the old leader's term is refused once the new term was seen"
    );
}

/// Node d, started with the voters c, d, e, meets a, b and c, started with a, b, c: with e, its
/// list could have a quorum of its own beside a and b's. Every node that sees it abstains (no
/// leader, calls refused with `NoQuorum`, the stranger named in the status) until it leaves;
/// then a, b and c elect again, with every acknowledged write.
async fn a_node_started_with_other_voters_stops_the_election_until_it_leaves(net: Net) {
    let nodes = net.loner_mesh(&["a", "b", "c"]).await;
    let (dicts, _dirs) = start_dicts(&nodes).await;
    let all: Vec<&Leader<Dict>> = dicts.iter().collect();
    let first = agreed(&all).await;
    dicts[0].leader_call(put("before", "0"), T).await.unwrap();

    // Connected first, then started, as the CLI starts a node: the stranger's greetings may
    // reach instances that do not count it yet, and theirs reach it before it counts them.
    let stranger = net.start(common::loner_config("d")).await;
    for node in &nodes {
        common::connect(&stranger, node).await;
    }
    let other_voters = ["c", "d", "e"].map(|n| NodeName::new(n).unwrap());
    let dir = scratch_dir("majority");
    let dict_d = start_dict(&stranger, &other_voters, &dir).await;
    all_abstain_until_it_leaves(&nodes, &dicts, first.term, &stranger, &dict_d).await;
}

/// Voters a and b lead without leases; voter c starts beside them with leases. A leader
/// elected among a and b would not wait out c's leases, nor c out theirs: the three abstain (no
/// leader, calls refused with `NoQuorum`, the other setting's nodes named in the status) until
/// c leaves, and then a and b elect again, with every acknowledged write.
async fn a_voter_with_another_lease_setting_stops_the_election_until_it_leaves(net: Net) {
    let nodes = net.loner_mesh(&["a", "b", "c"]).await;
    let voters = names(&nodes);
    let (dicts, _dirs) = start_dicts_among(&nodes[..2], &voters).await;
    let both: Vec<&Leader<Dict>> = dicts.iter().collect();
    let first = agreed(&both).await;
    dicts[0].leader_call(put("before", "0"), T).await.unwrap();

    let dir = scratch_dir("majority");
    let mut config = majority_config(&voters, &dir);
    config.leases = true;
    let dict_c = Leader::start(&nodes[2], config, Dict::default())
        .await
        .unwrap();
    all_abstain_until_it_leaves(&nodes[..2], &dicts, first.term, &nodes[2], &dict_c).await;
}

/// `nodes` (running `dicts`, led in `term`, "before" written) have met `stranger` (running
/// `its_dict`), whose settings they refuse: no node follows a leader, writes fail with
/// `NoQuorum`, and each side names the other in its status. Once `stranger` leaves, `nodes`
/// elect a later term holding "before" and not the refused write.
async fn all_abstain_until_it_leaves(
    nodes: &[Node],
    dicts: &[Leader<Dict>],
    term: u64,
    stranger: &Node,
    its_dict: &Leader<Dict>,
) {
    let all: Vec<&Leader<Dict>> = dicts.iter().collect();
    tokio::time::timeout(HANG, async {
        while all.iter().any(|dict| followed(dict).is_some()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("no node follows a leader while the stranger is connected");
    for dict in dicts {
        let refused = dict.leader_call(put("during", "1"), T).await;
        assert_eq!(refused, Err(LeaderCallError::NoQuorum));
        let status = dict.status(T).await.unwrap();
        assert_eq!(status.refused, [stranger.name().clone()]);
    }
    assert_eq!(its_dict.status(T).await.unwrap().refused, names(nodes));
    assert_eq!(followed(its_dict), None);

    stranger.shutdown().await;
    let second = agreed_after(&all, term).await;
    let leader = leader_of(nodes, &second);
    dicts[1].leader_call(put("after", "2"), T).await.unwrap();
    assert_eq!(value(&dicts[leader], "before").await.as_deref(), Some("0"));
    assert_eq!(value(&dicts[leader], "during").await, None);
}

/// Voters a, b, c and a worker w, in memory, w's links to the voters 2 ms each way (and, with
/// `bytes_per_second`, that slow), running the dictionary once they agree on a leader; with the
/// data directories, to hold while they run.
async fn voters_and_a_slow_worker(
    bytes_per_second: Option<u64>,
) -> (Vec<Node>, Vec<Leader<Dict>>, Vec<ScratchDir>) {
    let net = Net::memory();
    let Net::Memory(memory) = &net else {
        unreachable!()
    };
    for voter in ["a", "b", "c"] {
        memory.delay(voter, "w", Duration::from_millis(2));
        if let Some(rate) = bytes_per_second {
            memory.limit(voter, "w", rate);
        }
    }
    let nodes = net.loner_mesh(&["a", "b", "c", "w"]).await;
    let voters = names(&nodes[..3]);
    let (dicts, dirs) = start_dicts_among(&nodes, &voters).await;
    let all: Vec<&Leader<Dict>> = dicts.iter().collect();
    agreed(&all).await;
    (nodes, dicts, dirs)
}

/// `writers` tasks each write `writes` keys through `through`, and read each back from `copy`
/// as soon as it is answered: it must be there.
async fn each_write_answered_is_in(
    copy: &Leader<Dict>,
    through: &Leader<Dict>,
    writers: usize,
    writes: usize,
    value: &str,
) {
    let tasks: Vec<_> = (0..writers)
        .map(|writer| {
            let (through, copy, value) = (through.clone(), copy.clone(), value.to_string());
            tokio::spawn(async move {
                for i in 0..writes {
                    let key = format!("{writer}-{i}");
                    through.leader_call(put(&key, &value), T).await.unwrap();
                    let read = crate::value(&copy, &key).await;
                    assert!(
                        read.as_ref() == Some(&value),
                        "{key} answered, not in the copy"
                    );
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

/// 64 writers on the worker, 448 writes in all: each answered `Ok` is in the worker's own copy
/// when the answer comes, though the leader sends its broadcasts in batches and a batch waits
/// for the answer to the one before, which the worker gives last.
#[tokio::test(start_paused = true)]
async fn a_write_answered_to_a_worker_is_in_the_workers_copy_already() {
    let (_nodes, dicts, _dirs) = voters_and_a_slow_worker(None).await;
    each_write_answered_is_in(&dicts[3], &dicts[3], 64, 7, "v").await;
}

/// As above, with the calls routed through the worker's instance (a handle made with
/// `Leader::at`, as a CLI client's is: the instance forwards each call and relays the reply),
/// 70 KiB values over links of 10 MB/s, so each write goes to the worker in fragments: the
/// reply to the forwarding instance never overtakes the batch that carries its write.
#[tokio::test(start_paused = true)]
async fn a_write_forwarded_by_a_worker_is_in_its_copy_when_the_reply_arrives() {
    let (nodes, dicts, _dirs) = voters_and_a_slow_worker(Some(10_000_000)).await;
    let through = Leader::<Dict>::at(&nodes[3], nodes[3].name(), "dict");
    each_write_answered_is_in(&dicts[3], &through, 16, 4, &"v".repeat(70 * 1024)).await;
}

/// A write a voter's handle made, with no call on the worker: the worker's copy has it within
/// the leader's progress on it, not a heartbeat round later (the leader holds a worker's batch
/// until a quorum's answer moves its progress; nothing else would send it here).
#[tokio::test(start_paused = true)]
async fn a_worker_gets_a_write_it_did_not_ask_for_once_a_quorum_holds_it() {
    let (_nodes, dicts, _dirs) = voters_and_a_slow_worker(None).await;
    let heartbeat = LeaderConfig::new("any", Vec::new()).heartbeat;
    for i in 0..10 {
        let key = format!("k{i}");
        dicts[0].leader_call(put(&key, "v"), T).await.unwrap();
        let answered = Instant::now();
        while value(&dicts[3], &key).await.is_none() {
            tokio::time::sleep(Duration::from_millis(1)).await;
            assert!(
                answered.elapsed() < heartbeat / 2,
                "{key} not in the worker's copy {:?} after its answer",
                answered.elapsed()
            );
        }
    }
}

/// A single voter with a worker, idle for several election timeouts: the worker keeps
/// following it (the leader's heartbeats reach it though no answer moves a quorum of one), and
/// a write through the worker is answered at once and is in its copy.
#[tokio::test(start_paused = true)]
async fn a_worker_of_a_single_voter_keeps_following_it_while_idle() {
    let net = Net::memory();
    let nodes = net.loner_mesh(&["solo", "w"]).await;
    let voters = names(&nodes[..1]);
    let (dicts, _dirs) = start_dicts_among(&nodes, &voters).await;
    let election = agreed(&[&dicts[0], &dicts[1]]).await;
    tokio::time::sleep(ELECTION_TIMEOUT * 6).await;
    assert_eq!(
        followed(&dicts[1]),
        Some(election),
        "the worker lost its leader"
    );
    let asked = Instant::now();
    dicts[1].leader_call(put("k", "v"), T).await.unwrap();
    assert!(
        asked.elapsed() < Duration::from_millis(50),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(value(&dicts[1], "k").await.as_deref(), Some("v"));
}

on_both_transports!(
    three_voters_agree_on_one_leader_and_an_acknowledged_write_is_held_by_a_quorum,
    a_restarted_voter_keeps_its_term_and_catches_up,
    a_leader_that_shuts_down_hands_over_and_the_fence_refuses_its_term,
    a_node_started_with_other_voters_stops_the_election_until_it_leaves,
    a_voter_with_another_lease_setting_stops_the_election_until_it_leaves,
);

#[tokio::test(start_paused = true)]
async fn with_leases_a_leader_reads_alone_within_its_lease_and_its_successor_waits_it_out() {
    let network = Net::memory();
    let Net::Memory(memory) = &network else {
        unreachable!()
    };
    let nodes = network.loner_mesh(&["a", "b", "c"]).await;
    let (dicts, _dirs) = start_dicts_with(&nodes, &names(&nodes), |c| c.leases = true).await;
    let all: Vec<&Leader<Dict>> = dicts.iter().collect();
    let first = agreed(&all).await;
    let old = leader_of(&nodes, &first);
    let rest: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    dicts[old].leader_call(put("k", "1"), T).await.unwrap();

    // The leader's links hang. Within its lease it still answers a read alone (without the
    // lease it would wait for a round no quorum answers, and fail).
    for &i in &rest {
        memory.cut(nodes[old].name().as_str(), nodes[i].name().as_str());
    }
    let get = || Request::Get("k".into());
    let asked = Instant::now();
    let read = dicts[old].leader_call(get(), T).await;
    assert_eq!(read, Ok(Some("1".to_string())), "a read within the lease");
    assert!(
        asked.elapsed() < ELECTION_TIMEOUT / 10,
        "{:?}",
        asked.elapsed()
    );
    // Past the lease (a heartbeat at most after the cut, then the lease), it answers none.
    tokio::time::sleep(ELECTION_TIMEOUT).await;
    let late = dicts[old].leader_call(get(), T).await;
    assert!(
        matches!(
            late,
            Err(LeaderCallError::LeaderDied | LeaderCallError::NoQuorum)
        ),
        "a read past the lease: {late:?}"
    );

    // The others elect a successor, which serves nothing until the election timeout passed.
    let majority: Vec<&Leader<Dict>> = rest.iter().map(|&i| &dicts[i]).collect();
    let second = agreed_after(&majority, first.term).await;
    let seen = Instant::now();
    let new = leader_of(&nodes, &second);
    dicts[new].leader_call(put("k", "2"), T).await.unwrap();
    assert!(
        seen.elapsed() >= ELECTION_TIMEOUT - Duration::from_millis(100),
        "the successor served {:?} after it was seen elected",
        seen.elapsed()
    );
    let read = dicts[new].leader_call(get(), T).await;
    assert_eq!(read, Ok(Some("2".to_string())));
}

#[tokio::test]
async fn settings_that_cannot_run_a_majority_election_are_refused_at_start() {
    let node = common::loner("a").await;
    let voters = vec![node.name().clone(), NodeName::new("b").unwrap()];
    let dir = scratch_dir("majority-settings");

    for name in ["../escape", "", ".hidden", "a/b"] {
        let mut config = majority_config(&voters, &dir);
        config.name = name.into();
        let error = Leader::start(&node, config, Dict::default()).await.err();
        assert!(
            matches!(error, Some(StartError::BadElectionConfig(_))),
            "{name:?}: {error:?}"
        );
    }

    let mut no_dir = majority_config(&voters, &dir);
    no_dir.data_dir = None;
    let error = Leader::start(&node, no_dir, Dict::default()).await.err();
    assert!(
        matches!(error, Some(StartError::DataDir(DataDirError::NoDataDir))),
        "{error:?}"
    );

    let mut slow_heartbeat = majority_config(&voters, &dir);
    slow_heartbeat.heartbeat = slow_heartbeat.election_timeout;
    let error = Leader::start(&node, slow_heartbeat, Dict::default())
        .await
        .err();
    assert!(
        matches!(error, Some(StartError::BadElectionConfig(_))),
        "{error:?}"
    );

    let mut leases_without_majority = majority_config(&voters, &dir);
    leases_without_majority.mode = ElectionMode::Priority;
    leases_without_majority.leases = true;
    let error = Leader::start(&node, leases_without_majority, Dict::default())
        .await
        .err();
    assert!(
        matches!(&error, Some(StartError::BadElectionConfig(why)) if why.contains("leases")),
        "{error:?}"
    );

    let b = NodeName::new("b").unwrap();
    let named_twice = [node.name().clone(), b.clone(), b.clone(), b];
    let error = Leader::start(&node, majority_config(&named_twice, &dir), Dict::default())
        .await
        .err();
    assert!(
        matches!(&error, Some(StartError::BadElectionConfig(why)) if why.contains("twice")),
        "{error:?}"
    );

    std::fs::write(dir.join("gen_leader.dict.term"), "gen_leader-term-v1 x -\n").unwrap();
    let error = Leader::start(&node, majority_config(&voters, &dir), Dict::default())
        .await
        .err();
    let Some(StartError::DataDir(DataDirError::Corrupt(path))) = &error else {
        panic!("a corrupt term file is a start error: {error:?}");
    };
    assert!(path.ends_with("gen_leader.dict.term"));

    // A worker keeps no term: it needs no data directory.
    let worker = common::loner("w").await;
    let mut config = majority_config(&voters, &dir);
    config.data_dir = None;
    Leader::start(&worker, config, Dict::default())
        .await
        .expect("a worker starts without a data directory");
}

#[tokio::test(start_paused = true)]
async fn a_single_voter_leads_alone_and_acknowledges_each_write_at_once() {
    let net = Net::memory();
    let node = net.node("solo").await;
    let dir = scratch_dir("majority-solo");
    let dict = start_dict(&node, &[node.name().clone()], &dir).await;
    agreed(&[&dict]).await;
    for i in 0..3 {
        let asked = Instant::now();
        let written = dict.leader_call(put(&format!("k{i}"), "v"), T).await;
        assert!(written.is_ok(), "write {i}: {written:?}");
        assert!(
            asked.elapsed() < Duration::from_millis(50),
            "a quorum of one waited {:?} for a later round",
            asked.elapsed()
        );
    }
}
