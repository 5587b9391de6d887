//! DNS discovery against a real DNS server: hickory-server, in this process, whose records the
//! tests change while nodes discover through it. A and SRV records, by IP and by host name;
//! NXDOMAIN, timeouts, empty answers and SRV targets that do not resolve keep the last good
//! answer. (`.ci/run` also runs `dnsmasq_discovery`, against Debian's dnsmasq.)

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use common::{
    HANG, ScratchDir, free_port, loner, loner_config, next_event, real_peer, scratch_dir,
    wait_until,
};
use gen_cluster::{
    Discover, Discovery, DiscoveryEvent, Dns, DnsA, DnsSrv, HostType, Node, NodeEvent,
    ReconcileConfig,
};
use gen_cluster_proto::reconcile::MAX_PEERS;
use hickory_proto::rr::rdata::{A, PTR, SOA, SRV};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType, RrKey};
use hickory_server::Server;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::broadcast;

const NODES: &str = "nodes.cluster.test.";
const SERVICE: &str = "_gen-cluster._tcp.cluster.test.";

/// An authoritative DNS server on a loopback port, for `cluster.test` and `10.in-addr.arpa`
/// (the resolver answers for `127.in-addr.arpa` itself: `localhost`).
struct TestDns {
    zones: Vec<Arc<InMemoryZoneHandler>>,
    addr: SocketAddr,
    _server: Server<Catalog>,
}

impl TestDns {
    async fn start() -> Self {
        let mut catalog = Catalog::new();
        let mut zones = Vec::new();
        for origin in ["cluster.test.", "10.in-addr.arpa."] {
            let origin = Name::from_str(origin).unwrap();
            let zone =
                InMemoryZoneHandler::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
            let soa = SOA::new(origin.clone(), origin.clone(), 1, 60, 60, 60, 0);
            assert!(
                zone.upsert(Record::from_rdata(origin.clone(), 0, RData::SOA(soa)), 1)
                    .await
            );
            let zone = Arc::new(zone);
            catalog.upsert(
                LowerName::new(&origin),
                vec![zone.clone() as Arc<dyn ZoneHandler>],
            );
            zones.push(zone);
        }
        // The same port for UDP and TCP: a port free for UDP may be taken for TCP; try another.
        let (udp, addr, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = udp.local_addr().unwrap();
            if let Ok(tcp) = TcpListener::bind(addr).await {
                break (udp, addr, tcp);
            }
        };
        let mut server = Server::new(catalog);
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 64);
        Self {
            zones,
            addr,
            _server: server,
        }
    }

    fn dns(&self) -> Dns {
        Dns::server(self.addr)
    }

    /// Replaces every record of `name` and `kind` with `data`.
    async fn set(&self, name: &str, kind: RecordType, data: Vec<RData>) {
        let name = Name::from_str(name).unwrap();
        let zone = self
            .zones
            .iter()
            .find(|z| z.origin().zone_of(&LowerName::new(&name)))
            .unwrap();
        zone.records_mut()
            .await
            .remove(&RrKey::new(LowerName::new(&name), kind));
        for data in data {
            assert!(
                zone.upsert(Record::from_rdata(name.clone(), 0, data), 1)
                    .await
            );
        }
    }

    async fn set_a(&self, name: &str, ips: &[Ipv4Addr]) {
        let data = ips.iter().map(|ip| RData::A(A(*ip))).collect();
        self.set(name, RecordType::A, data).await;
    }

    async fn set_srv(&self, targets: &[(&str, u16)]) {
        let data = targets
            .iter()
            .map(|(target, port)| {
                RData::SRV(SRV::new(0, 0, *port, Name::from_str(target).unwrap()))
            })
            .collect();
        self.set(SERVICE, RecordType::SRV, data).await;
    }

    async fn set_ptr(&self, ip: Ipv4Addr, host: Option<&str>) {
        let name = Name::from(IpAddr::V4(ip)).to_string();
        let data = host
            .map(|h| RData::PTR(PTR(Name::from_str(h).unwrap())))
            .into_iter()
            .collect();
        self.set(&name, RecordType::PTR, data).await;
    }
}

fn every(ms: u64) -> ReconcileConfig {
    ReconcileConfig {
        refresh_interval: Some(Duration::from_millis(ms)),
        ..Default::default()
    }
}

/// Nodes listening on the same port at distinct loopback addresses (A records carry no port).
async fn nodes_on_one_port(names_and_ips: &[(&str, Ipv4Addr)]) -> (Vec<Node>, u16) {
    'attempt: for _ in 0..20 {
        let probe = std::net::TcpListener::bind((names_and_ips[0].1, 0)).unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let mut nodes = Vec::new();
        for (name, ip) in names_and_ips {
            let mut config = loner_config(name);
            config.listen = SocketAddr::new(IpAddr::V4(*ip), port).to_string();
            match Node::start(config).await {
                Ok(node) => nodes.push(node),
                Err(_) => continue 'attempt,
            }
        }
        return (nodes, port);
    }
    panic!("no port free on every address")
}

/// The next discovery event matching `pick`.
async fn next(
    events: &mut broadcast::Receiver<DiscoveryEvent>,
    pick: impl Fn(&DiscoveryEvent) -> bool,
) {
    tokio::time::timeout(HANG, async {
        loop {
            match events.recv().await {
                Ok(event) if pick(&event) => return,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("discovery ended"),
            }
        }
    })
    .await
    .expect("discovery event before the hang bound");
}

/// `a` discovers `b` and then `c` as its records come, and once `c`'s record is gone does not
/// dial it again after its connection drops; `c_addr` is how discovery names `c`.
async fn added_then_removed(
    a: &Node,
    (b, c): (&Node, &Node),
    c_addr: &str,
    mut events: broadcast::Receiver<DiscoveryEvent>,
    add_c: impl AsyncFnOnce(),
    remove_c: impl AsyncFnOnce(),
) {
    wait_until(|| a.is_connected(b.name())).await;
    assert!(!a.is_connected(c.name()), "c has no record yet");
    add_c().await;
    wait_until(|| a.is_connected(c.name())).await;
    remove_c().await;
    next(&mut events, |e| {
        *e == DiscoveryEvent::Removed(c_addr.to_string())
    })
    .await;
    assert!(c.disconnect(a.name()));
    wait_until(|| !a.is_connected(c.name())).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !a.is_connected(c.name()),
        "a peer no longer in DNS is not redialed"
    );
    assert!(a.is_connected(b.name()), "the peer still in DNS stays");
}

#[tokio::test]
async fn a_records_by_ip_connect_added_peers_and_forget_removed_ones() {
    let dns = TestDns::start().await;
    let (b_ip, c_ip) = (Ipv4Addr::new(127, 0, 0, 11), Ipv4Addr::new(127, 0, 0, 12));
    let (nodes, port) = nodes_on_one_port(&[("b", b_ip), ("c", c_ip)]).await;
    let a = loner("a").await;
    dns.set_a(NODES, &[b_ip]).await;
    let discovery = Discovery::start(
        &a,
        DnsA::new(dns.dns(), NODES, port, HostType::Ip),
        every(50),
    );
    added_then_removed(
        &a,
        (&nodes[0], &nodes[1]),
        &format!("{c_ip}:{port}"),
        discovery.into_events(),
        async || dns.set_a(NODES, &[b_ip, c_ip]).await,
        async || dns.set_a(NODES, &[b_ip]).await,
    )
    .await;
}

#[tokio::test]
async fn srv_records_by_ip_and_by_host_name_connect_added_peers_and_forget_removed_ones() {
    for host_type in [HostType::Ip, HostType::Hostname] {
        let dns = TestDns::start().await;
        let (a, b, c) = (loner("a").await, loner("b").await, loner("c").await);
        let port = |n: &Node| {
            n.listen_addr()
                .rsplit_once(':')
                .unwrap()
                .1
                .parse::<u16>()
                .unwrap()
        };
        let (b_port, c_port) = (port(&b), port(&c));
        // By IP, targets resolve through this server; by name, through the system (localhost).
        let target = match host_type {
            HostType::Ip => "peers.cluster.test.",
            HostType::Hostname => "localhost.",
        };
        dns.set_a("peers.cluster.test.", &[Ipv4Addr::LOCALHOST])
            .await;
        dns.set_srv(&[(target, b_port)]).await;
        let c_addr = match host_type {
            HostType::Ip => format!("127.0.0.1:{c_port}"),
            HostType::Hostname => format!("localhost:{c_port}"),
        };
        let discovery = Discovery::start(&a, DnsSrv::new(dns.dns(), SERVICE, host_type), every(50));
        added_then_removed(
            &a,
            (&b, &c),
            &c_addr,
            discovery.into_events(),
            async || dns.set_srv(&[(target, b_port), (target, c_port)]).await,
            async || dns.set_srv(&[(target, b_port)]).await,
        )
        .await;
    }
}

#[tokio::test]
async fn a_records_by_host_name_use_the_reverse_lookup_and_keep_its_last_good_answer() {
    let dns = TestDns::start().await;
    let other = Ipv4Addr::new(10, 0, 0, 2);
    dns.set_a(NODES, &[Ipv4Addr::LOCALHOST, other]).await;
    let b = loner("b").await;
    let port: u16 = b.listen_addr().rsplit_once(':').unwrap().1.parse().unwrap();
    let discover = DnsA::new(dns.dns(), NODES, port, HostType::Hostname);

    let found = discover.peers().await.unwrap();
    assert_eq!(
        found,
        vec![format!("localhost:{port}")],
        "an address without PTR record is left out"
    );
    dns.set_ptr(other, Some("other.cluster.test.")).await;
    let found = discover.peers().await.unwrap();
    assert_eq!(
        found,
        vec![
            format!("localhost:{port}"),
            format!("other.cluster.test:{port}")
        ]
    );
    dns.set_ptr(other, None).await;
    assert_eq!(
        discover.peers().await.unwrap(),
        found,
        "a failed reverse lookup keeps its last answer"
    );

    let a = loner("a").await;
    Discovery::start(&a, discover, every(50));
    wait_until(|| a.is_connected(b.name())).await;
}

#[tokio::test]
async fn nxdomain_empty_answers_and_unresolvable_srv_targets_fail_the_round_or_keep_the_rest() {
    let dns = TestDns::start().await;
    let a = DnsA::new(dns.dns(), "absent.cluster.test.", 4370, HostType::Ip);
    let error = a.peers().await.unwrap_err();
    assert!(error.0.contains("absent.cluster.test"), "{error}");

    // The name exists (it has SRV records) but has no A record: an empty answer.
    dns.set_srv(&[("nowhere.cluster.test.", 1)]).await;
    let a = DnsA::new(dns.dns(), SERVICE, 4370, HostType::Ip);
    assert!(
        a.peers().await.is_err(),
        "no address records is a failed round"
    );

    let srv = DnsSrv::new(dns.dns(), SERVICE, HostType::Ip);
    assert!(
        srv.peers().await.is_err(),
        "no target resolves: a failed round"
    );
    dns.set_a("peers.cluster.test.", &[Ipv4Addr::LOCALHOST])
        .await;
    dns.set_srv(&[("nowhere.cluster.test.", 1), ("peers.cluster.test.", 2)])
        .await;
    assert_eq!(
        srv.peers().await.unwrap(),
        vec!["127.0.0.1:2".to_string()],
        "a target that does not resolve is left out, the others stay"
    );
    dns.set_a("peers.cluster.test.", &[]).await;
    assert_eq!(
        srv.peers().await.unwrap(),
        vec!["127.0.0.1:2".to_string()],
        "a target that stops resolving keeps its last addresses"
    );
}

/// One SRV target with many ports and many addresses multiplies out: 100 × 50 would be 5,000
/// peers. The source stops one past the bound, the loop keeps the bound and says so once, and
/// the node stays reachable while it dials its share.
#[tokio::test]
async fn an_srv_answer_that_multiplies_out_is_cut_to_the_bound_and_said() {
    let dns = TestDns::start().await;
    let ips: Vec<Ipv4Addr> = (1..=50).map(|i| Ipv4Addr::new(127, 0, 9, i)).collect();
    dns.set_a("many.cluster.test.", &ips).await;
    let targets: Vec<(&str, u16)> = (1..=100).map(|port| ("many.cluster.test.", port)).collect();
    dns.set_srv(&targets).await;
    let srv = DnsSrv::new(dns.dns(), SERVICE, HostType::Ip);
    assert_eq!(srv.peers().await.unwrap().len(), MAX_PEERS + 1);

    let (a, b) = (loner("a").await, loner("b").await);
    let once = ReconcileConfig {
        refresh_interval: None,
        ..Default::default()
    };
    let mut events = Discovery::start(&a, srv, once).into_events();
    next(&mut events, |e| {
        *e == DiscoveryEvent::TooManyPeers { kept: MAX_PEERS }
    })
    .await;
    let name = tokio::time::timeout(HANG, b.connect(a.listen_addr()))
        .await
        .expect("a answers while it dials")
        .unwrap();
    assert_eq!(&name, a.name());
}

#[tokio::test]
async fn a_server_that_never_answers_is_a_failed_round_not_a_hang() {
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let discover = DnsA::new(
        Dns::server(silent.local_addr().unwrap()),
        NODES,
        4370,
        HostType::Ip,
    );
    let outcome = tokio::time::timeout(HANG, discover.peers()).await;
    assert!(outcome.expect("an answer before the hang bound").is_err());
}

/// A lookup waiting on a server that never answers does not outlive the node: shutdown ends
/// it, rather than wait for its deadline.
#[tokio::test]
async fn shutdown_ends_a_lookup_still_waiting_for_its_answer() {
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let a = loner("a").await;
    let discover = DnsA::new(
        Dns::server(silent.local_addr().unwrap()),
        NODES,
        4370,
        HostType::Ip,
    );
    Discovery::start(&a, discover, ReconcileConfig::default());
    let mut query = [0u8; 512];
    tokio::time::timeout(HANG, silent.recv_from(&mut query))
        .await
        .expect("a query before the hang bound")
        .unwrap();
    a.shutdown().await;
    assert_eq!(a.running_tasks(), 0, "a task outlived the node");
}

#[tokio::test]
async fn a_connected_peer_whose_records_vanish_is_still_reconnected_after_a_drop() {
    let dns = TestDns::start().await;
    let b = loner("b").await;
    let port: u16 = b.listen_addr().rsplit_once(':').unwrap().1.parse().unwrap();
    dns.set_a(NODES, &[Ipv4Addr::LOCALHOST]).await;
    let a = loner("a").await;
    let mut events = Discovery::start(
        &a,
        DnsA::new(dns.dns(), NODES, port, HostType::Ip),
        every(50),
    )
    .into_events();
    wait_until(|| a.is_connected(b.name())).await;
    dns.set_a(NODES, &[]).await;
    next(&mut events, |e| {
        matches!(e, DiscoveryEvent::DiscoveryFailed(_))
    })
    .await;
    let mut node_events = a.subscribe();
    assert!(b.disconnect(a.name()));
    next_event(&mut node_events, |e| {
        matches!(e, NodeEvent::NodeDown { .. }).then_some(())
    })
    .await;
    wait_until(|| a.is_connected(b.name())).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let failures = std::iter::from_fn(|| events.try_recv().ok())
        .filter(|e| matches!(e, DiscoveryEvent::DiscoveryFailed(_)))
        .count();
    assert_eq!(
        failures, 0,
        "the same failure round after round is reported once"
    );
}

/// Debian's dnsmasq on a loopback port, serving `hosts` (reloaded on SIGHUP) and fixed SRV records.
struct Dnsmasq {
    process: tokio::process::Child,
    hosts: std::path::PathBuf,
    addr: SocketAddr,
    /// Holds the hosts file (declared last: removed after the process is killed).
    _dir: ScratchDir,
}

impl Dnsmasq {
    async fn start(program: &std::path::Path, hosts: &str, srv: &[(&str, u16)]) -> Self {
        let dir = scratch_dir("dnsmasq");
        let hosts_file = dir.join("hosts");
        std::fs::write(&hosts_file, hosts).unwrap();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let mut command = tokio::process::Command::new(program);
        command
            .args([
                "-C",
                "/dev/null",
                "--keep-in-foreground",
                "--bind-interfaces",
                "--no-resolv",
            ])
            .args([
                "--no-hosts",
                "--user=root",
                "--pid-file",
                "--log-facility=-",
            ])
            .arg(format!("--listen-address={}", addr.ip()))
            .arg(format!("--port={}", addr.port()))
            .arg(format!("--addn-hosts={}", hosts_file.display()));
        for (target, port) in srv {
            command.arg(format!(
                "--srv-host={},{target},{port}",
                SERVICE.trim_end_matches('.')
            ));
        }
        let process = command
            .kill_on_drop(true)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let dnsmasq = Self {
            process,
            hosts: hosts_file,
            addr,
            _dir: dir,
        };
        let probe = DnsSrv::new(Dns::server(addr), SERVICE, HostType::Hostname);
        tokio::time::timeout(HANG, async {
            while probe.peers().await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("dnsmasq answers");
        dnsmasq
    }

    /// Replaces the hosts file and has dnsmasq read it again.
    fn set_hosts(&self, hosts: &str) {
        std::fs::write(&self.hosts, hosts).unwrap();
        let pid = self.process.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

#[tokio::test]
async fn dnsmasq_discovery() {
    let Some(program) = real_peer("dnsmasq") else {
        return;
    };
    let (b_ip, c_ip) = (Ipv4Addr::new(127, 0, 0, 11), Ipv4Addr::new(127, 0, 0, 12));
    let (nodes, port) = nodes_on_one_port(&[("b", b_ip), ("c", c_ip)]).await;
    let (d, e) = (loner("d").await, loner("e").await);
    let port_of = |n: &Node| {
        n.listen_addr()
            .rsplit_once(':')
            .unwrap()
            .1
            .parse::<u16>()
            .unwrap()
    };
    let b_only = format!("{b_ip} nodes.cluster.test\n127.0.0.1 peers.cluster.test\n");
    let dnsmasq = Dnsmasq::start(
        &program,
        &b_only,
        &[
            ("localhost", port_of(&d)),
            ("peers.cluster.test", port_of(&e)),
        ],
    )
    .await;

    // SRV: d by host name (localhost), e by the address of its target.
    let srv = loner("srv").await;
    Discovery::start(
        &srv,
        DnsSrv::new(Dns::server(dnsmasq.addr), SERVICE, HostType::Hostname),
        every(50),
    );
    Discovery::start(
        &srv,
        DnsSrv::new(Dns::server(dnsmasq.addr), SERVICE, HostType::Ip),
        every(50),
    );
    wait_until(|| srv.is_connected(d.name()) && srv.is_connected(e.name())).await;

    // A records that change while discovery runs.
    let a = loner("a").await;
    let discovery = Discovery::start(
        &a,
        DnsA::new(
            Dns::server(dnsmasq.addr),
            "nodes.cluster.test",
            port,
            HostType::Ip,
        ),
        every(50),
    );
    added_then_removed(
        &a,
        (&nodes[0], &nodes[1]),
        &format!("{c_ip}:{port}"),
        discovery.into_events(),
        async || dnsmasq.set_hosts(&format!("{b_only}{c_ip} nodes.cluster.test\n")),
        async || dnsmasq.set_hosts(&b_only),
    )
    .await;
}
