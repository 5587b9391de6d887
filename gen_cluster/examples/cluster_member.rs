//! An example cluster member, the counterpart of gen_cluster's `example_cluster_srv.erl`: each
//! member prints the member list on every join and leave and keeps a count of the joins it saw.
//!
//! Run three, in three terminals (the cookie and cluster name must match):
//!
//! ```sh
//! cargo run -p gen_cluster --example cluster_member -- one 127.0.0.1:4390
//! cargo run -p gen_cluster --example cluster_member -- two 127.0.0.1:4391 127.0.0.1:4390
//! cargo run -p gen_cluster --example cluster_member -- three 127.0.0.1:4392 127.0.0.1:4390
//! ```
//!
//! Stop one with Ctrl-C (or `kill -9` it): the others print the leave and the new list.

use std::time::Duration;

use gen_cluster::{
    ClusterContext, ClusterServer, Clustered, ExitReason, Flow, Member, MemberConfig, Membership,
    Node, NodeConfig, NodeName, ReplyTo, Seed,
};

/// The member's state: how many joins it has seen.
struct ExampleMember {
    joins_seen: u64,
}

fn show(members: &Membership) -> String {
    members
        .members()
        .map(|m| m.pid.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

impl ClusterServer for ExampleMember {
    /// Any call: the reply is the member list.
    type Call = ();
    type Reply = Vec<Member>;
    type Cast = ();
    type Info = ();

    async fn handle_join(
        &mut self,
        joining: &Member,
        members: &Membership,
        _: &mut ClusterContext<Self>,
    ) -> Flow {
        self.joins_seen += 1;
        println!(
            "{} joined through me; members: {}",
            joining.pid,
            show(members)
        );
        Flow::Continue
    }

    async fn handle_node_joined(
        &mut self,
        joined: &Member,
        members: &Membership,
        _: &mut ClusterContext<Self>,
    ) -> Flow {
        self.joins_seen += 1;
        println!("{} joined; members: {}", joined.pid, show(members));
        Flow::Continue
    }

    async fn handle_leave(
        &mut self,
        left: &Member,
        members: &Membership,
        reason: &ExitReason,
        _: &mut ClusterContext<Self>,
    ) -> Flow {
        println!("{} left ({reason}); members: {}", left.pid, show(members));
        Flow::Continue
    }

    async fn handle_call(
        &mut self,
        _: (),
        from: ReplyTo<Vec<Member>>,
        members: &Membership,
        _: &mut ClusterContext<Self>,
    ) -> Flow {
        from.reply(members.members().cloned().collect());
        Flow::Continue
    }

    async fn terminate(&mut self, reason: &ExitReason, _: &mut ClusterContext<Self>) {
        println!("stopping ({reason}) after seeing {} joins", self.joins_seen);
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: cluster_member NAME LISTEN_ADDR [SEED_ADDR]";
    let name = NodeName::new(args.next().ok_or(usage)?)?;
    let mut config = NodeConfig::new(name, "example-cookie");
    config.listen = args.next().ok_or(usage)?;
    let node = Node::start(config).await?;
    let seed = match args.next() {
        Some(addr) => Seed::Address(addr),
        None => Seed::First,
    };
    let member = Clustered::start(
        &node,
        MemberConfig::new("example", "member", seed),
        ExampleMember { joins_seen: 0 },
    )
    .await?;
    let members = node.call(&member, (), Duration::from_secs(5)).await?;
    println!(
        "member {} started on {}; {} member(s) so far",
        member.pid().ok_or("pid")?,
        node.listen_addr(),
        members.len()
    );
    tokio::signal::ctrl_c().await?;
    node.shutdown().await;
    Ok(())
}
