//! Global names across three nodes in one OS process: register and whereis everywhere, release
//! when the holder or its node ends, one winner for concurrent registrations, and one holder
//! everywhere after a partition heals, with the loser told once.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::{HANG, Net, wait_until};
use gen_cluster::{Info, Mailbox, Node, Pid, RegisterError};

/// Three nodes, all connected to each other.
async fn mesh() -> [Node; 3] {
    common::mesh(&["a", "b", "c"])
        .await
        .try_into()
        .ok()
        .unwrap()
}

/// Three nodes that do not redial on their own, all connected to each other.
async fn loner_mesh() -> [Node; 3] {
    Net::Tcp
        .loner_mesh(&["a", "b", "c"])
        .await
        .try_into()
        .ok()
        .unwrap()
}

async fn everywhere(nodes: &[&Node], name: &str, holder: Option<Pid>) {
    for node in nodes {
        wait_until(|| node.globals().whereis(name) == holder).await;
    }
}

/// The NameLost notices a mailbox gets within `window`.
async fn notices(mailbox: &mut Mailbox<()>, window: Duration) -> Vec<(String, Pid)> {
    let mut seen = Vec::new();
    while let Ok(Some(info)) = tokio::time::timeout(window, mailbox.recv()).await {
        if let Info::NameLost { name, winner } = info {
            seen.push((name, winner));
        }
    }
    seen
}

#[tokio::test]
async fn a_registered_name_is_seen_on_every_node_and_refused_to_others() {
    let [a, b, c] = mesh().await;
    let holder = b.mailbox::<()>();
    b.globals().register("service", holder.pid()).await.unwrap();
    // Every connected node learned it before register_global returned.
    for node in [&a, &b, &c] {
        assert_eq!(node.globals().whereis("service"), Some(holder.pid()));
    }
    let other = c.mailbox::<()>();
    assert_eq!(
        c.globals().register("service", other.pid()).await,
        Err(RegisterError::Taken(holder.pid()))
    );
    assert_eq!(
        a.globals().register("x", other.pid()).await,
        Err(RegisterError::NotLocal(other.pid())),
        "a node registers only its own processes"
    );
    assert!(b.globals().unregister("service").await);
    everywhere(&[&a, &b, &c], "service", None).await;
    c.globals().register("service", other.pid()).await.unwrap();
    everywhere(&[&a, &b, &c], "service", Some(other.pid())).await;
}

#[tokio::test]
async fn a_name_is_released_everywhere_when_its_holder_ends() {
    let [a, b, c] = mesh().await;
    let holder = a.mailbox::<()>();
    a.globals().register("job", holder.pid()).await.unwrap();
    drop(holder);
    everywhere(&[&a, &b, &c], "job", None).await;
}

#[tokio::test]
async fn a_name_is_released_when_its_holders_node_is_lost() {
    let [a, b, c] = loner_mesh().await;
    let holder = c.mailbox::<()>();
    c.globals().register("job", holder.pid()).await.unwrap();
    everywhere(&[&a, &b], "job", Some(holder.pid())).await;
    // c vanishes from a's and b's view without a goodbye, as after a crash.
    a.disconnect(c.name());
    b.disconnect(c.name());
    everywhere(&[&a, &b], "job", None).await;
}

#[tokio::test]
async fn concurrent_registrations_of_one_name_have_exactly_one_winner() {
    for round in 0..10 {
        let [a, b, c] = mesh().await;
        let name = format!("leader{round}");
        let holders = [a.mailbox::<()>(), b.mailbox::<()>(), c.mailbox::<()>()];
        let (ra, rb, rc) = tokio::join!(
            a.globals().register(&name, holders[0].pid()),
            b.globals().register(&name, holders[1].pid()),
            c.globals().register(&name, holders[2].pid()),
        );
        let winners: Vec<Pid> = [ra, rb, rc]
            .into_iter()
            .zip(&holders)
            .filter(|(result, _)| result.is_ok())
            .map(|(_, holder)| holder.pid())
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one registration succeeds"
        );
        everywhere(&[&a, &b, &c], &name, Some(winners[0])).await;
    }
}

#[tokio::test]
async fn after_a_partition_heals_one_holder_remains_everywhere_and_the_loser_is_told_once() {
    // Nodes that do not redial on their own, so that `disconnect` makes the partition.
    let [a, b, c] = loner_mesh().await;
    // Partition {a} | {b, c}.
    for peer in [b.name(), c.name()] {
        a.disconnect(peer);
    }
    wait_until(|| a.peers().is_empty() && b.peers().len() == 1 && c.peers().len() == 1).await;
    let mut on_a = a.mailbox::<()>();
    let mut on_b = b.mailbox::<()>();
    a.globals().register("singleton", on_a.pid()).await.unwrap();
    b.globals().register("singleton", on_b.pid()).await.unwrap();
    assert_eq!(c.globals().whereis("singleton"), Some(on_b.pid()));
    // Heal.
    a.connect(b.listen_addr()).await.unwrap();
    a.connect(c.listen_addr()).await.unwrap();
    wait_until(|| [&a, &b, &c].iter().all(|n| n.peers().len() == 2)).await;
    let winner = tokio::time::timeout(HANG, async {
        loop {
            let views: Vec<_> = [&a, &b, &c]
                .iter()
                .map(|n| n.globals().whereis("singleton"))
                .collect();
            if views.iter().all(|v| *v == views[0] && v.is_some()) {
                return views[0].unwrap();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("views converge");
    let (winner_box, loser_box) = if winner == on_a.pid() {
        (&mut on_a, &mut on_b)
    } else {
        (&mut on_b, &mut on_a)
    };
    let window = Duration::from_millis(300);
    assert_eq!(
        notices(loser_box, window).await,
        vec![("singleton".to_string(), winner)],
        "the loser is told once"
    );
    assert!(
        notices(winner_box, window).await.is_empty(),
        "the winner is told nothing"
    );
}

/// A triangle with one edge cut (a–b silent, both reach c): the view makes {a, c} and {b} the
/// groups, and names act on groups. b's group is b alone, so b takes a name that a holds in
/// {a, c}; c sees a's holder, never b's, and a name only b holds is not seen in {a, c}. After
/// the heal one holder remains everywhere (a registered first), and b's is told once.
#[tokio::test(start_paused = true)]
async fn a_triangle_with_one_edge_cut_holds_names_per_fully_connected_group() {
    let memory = gen_cluster::MemoryNetwork::new();
    let nodes = Net::Memory(memory.clone()).mesh(&["a", "b", "c"]).await;
    let [a, b, c]: [Node; 3] = nodes.try_into().ok().unwrap();
    memory.cut("a", "b");
    common::one_group(&[&a, &c]).await;
    common::one_group(&[&b]).await;

    let on_a = a.mailbox::<()>();
    let mut on_b = b.mailbox::<()>();
    let only_b = b.mailbox::<()>();
    a.globals().register("x", on_a.pid()).await.unwrap();
    b.globals()
        .register("x", on_b.pid())
        .await
        .expect("b's group holds no x");
    b.globals().register("only-b", only_b.pid()).await.unwrap();
    assert_eq!(c.globals().whereis("x"), Some(on_a.pid()));
    assert_eq!(b.globals().whereis("x"), Some(on_b.pid()));
    assert_eq!(
        c.globals().whereis("only-b"),
        None,
        "c acts with a, not with b"
    );

    memory.heal("a", "b");
    everywhere(&[&a, &b, &c], "x", Some(on_a.pid())).await;
    everywhere(&[&a, &b, &c], "only-b", Some(only_b.pid())).await;
    assert_eq!(
        notices(&mut on_b, Duration::from_millis(300)).await,
        vec![("x".to_string(), on_a.pid())],
        "b's holder is told once that it lost"
    );
}
