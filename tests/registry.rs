//! The machine registry shared through a real Redis, as nodes in separate
//! processes share it: what one registers the others trust at once, conflicts
//! hold across them, and a store that goes away is a clear error, not a hang.
//!
//! Each registry here connects on its own, exactly as a node process does; they
//! share only the Redis server. Skipped without `redis-server` on a developer's
//! machine; a failure under `CI=true`.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use octopoll_agent::swarm::{machine_resource, trusted_servers};
use octopoll_agent::{Agent, AgentConfig, BackoffConfig, RegistrationClient, RegistrationTrust};
use octopoll_node::{
    Conflict, MachineRegistry, NewMachine, Node, NodeConfig, NodeId, RegisterError, Registered,
};
use octopoll_pki::{ApiKey, Identity, KeyType};
use octopoll_wire::SubscriptionId;

use common::{local_redis, local_redis_on_tcp, wait_until};

fn machine(name: &str) -> (NewMachine, Identity) {
    let identity = Identity::generate(name, KeyType::EcdsaP256).unwrap();
    let machine = NewMachine {
        name: name.into(),
        thumbprint: identity.thumbprint(),
        endpoint: SubscriptionId::random(&mut rand::rng()).into(),
        roles: vec!["web".into()],
        environments: vec![],
    };
    (machine, identity)
}

async fn pair(url: &str, namespace: &str) -> (MachineRegistry, MachineRegistry) {
    (
        MachineRegistry::connect(url, namespace).await.unwrap(),
        MachineRegistry::connect(url, namespace).await.unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_process_registers_another_resolves_at_once_and_learns_by_itself() {
    common::init_logging();
    let Some(redis) = local_redis("registry sharing").await else {
        return;
    };
    let (a, b) = pair(&redis.url(), "share").await;
    assert!(a.is_shared() && a.trusted().defers_unknown());
    let (new, _) = machine("web-01");
    let thumbprint = new.thumbprint;
    let Registered::Created(created) = a.register(new.clone()).await.unwrap() else {
        panic!("a new machine is created");
    };
    // Asked directly, before any announcement could be relied on.
    assert_eq!(b.resolve(&thumbprint).await.unwrap(), Some(created.clone()));
    let c = MachineRegistry::connect(&redis.url(), "share")
        .await
        .unwrap();
    wait_until(
        Duration::from_secs(5),
        "the announcement to reach the third copy",
        || c.by_thumbprint(&thumbprint),
        Option::is_some,
    )
    .await;
    assert!(c.trusted().contains(&thumbprint));
    assert_eq!(c.machines(), vec![created.clone()]);
    // A repeat through another process is the same machine.
    assert_eq!(
        b.register(new).await.unwrap(),
        Registered::Unchanged(created)
    );
    // Deregistered in one, gone from the others' copies (a moment later: the
    // copies follow the store, they do not lock it).
    a.deregister(&thumbprint).await.unwrap();
    for other in [&b, &c] {
        wait_until(
            Duration::from_secs(5),
            "the deregistration to reach the other copies",
            || other.trusted().contains(&thumbprint),
            |trusted| !trusted,
        )
        .await;
    }
    assert_eq!(b.resolve(&thumbprint).await.unwrap(), None);
    redis.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listening_machine_is_shared_with_its_address_and_never_trusted_to_poll() {
    let Some(redis) = local_redis("listening machines in the registry").await else {
        return;
    };
    let (a, b) = pair(&redis.url(), "listening").await;
    let (mut new, _) = machine("listening-01");
    new.endpoint = "https://10.0.0.5:10933/".parse().unwrap();
    let thumbprint = new.thumbprint;
    let Registered::Created(created) = a.register(new.clone()).await.unwrap() else {
        panic!("a new machine is created");
    };
    let seen = b.resolve(&thumbprint).await.unwrap().expect("shared");
    assert_eq!(seen, created);
    assert_eq!(seen.endpoint.to_string(), "https://10.0.0.5:10933/");
    assert!(seen.subscription().is_none());
    assert!(!a.trusted().contains(&thumbprint));
    assert!(!b.trusted().contains(&thumbprint));
    // The same certificate as a polling machine is another machine: refused.
    let mut polling = new.clone();
    polling.endpoint = SubscriptionId::random(&mut rand::rng()).into();
    assert!(matches!(
        b.register(polling).await,
        Err(RegisterError::Conflict(Conflict::Thumbprint { .. }))
    ));
    assert_eq!(
        b.register(new).await.unwrap(),
        Registered::Unchanged(created)
    );
    redis.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_hold_across_processes_and_ids_stay_unique() {
    let Some(redis) = local_redis("registry conflicts").await else {
        return;
    };
    let (a, b) = pair(&redis.url(), "conflicts").await;
    let (first, _) = machine("db-01");
    a.register(first.clone()).await.unwrap();
    let (mut same_name, _) = machine("db-01");
    same_name.endpoint = SubscriptionId::random(&mut rand::rng()).into();
    assert!(matches!(
        b.register(same_name).await,
        Err(RegisterError::Conflict(Conflict::Name { .. }))
    ));
    let renamed = NewMachine {
        name: "db-02".into(),
        ..first.clone()
    };
    assert!(matches!(
        b.register(renamed).await,
        Err(RegisterError::Conflict(Conflict::Thumbprint { .. }))
    ));
    // Another certificate claiming db-01's subscription, through the other process.
    let (mut claimer, _) = machine("impostor");
    claimer.endpoint = first.endpoint.clone();
    let claimed = b.register(claimer.clone()).await;
    assert!(
        matches!(&claimed, Err(RegisterError::Conflict(Conflict::Endpoint { existing, .. })) if existing == "db-01"),
        "{claimed:?}"
    );
    assert!(!b.trusted().contains(&claimer.thumbprint));
    // Once db-01 is gone, its subscription is free again.
    a.deregister(&first.thumbprint).await.unwrap();
    assert!(matches!(
        b.register(claimer).await,
        Ok(Registered::Created(_))
    ));
    // Forty registrations racing through two processes: forty distinct ids.
    let mut racing = tokio::task::JoinSet::new();
    for i in 0..40 {
        let registry = if i % 2 == 0 { a.clone() } else { b.clone() };
        racing.spawn(async move {
            let (new, _) = machine(&format!("race-{i}"));
            match registry.register(new).await.unwrap() {
                Registered::Created(m) => m.id,
                other => panic!("expected a new machine, got {other:?}"),
            }
        });
    }
    let ids: HashSet<String> = racing.join_all().await.into_iter().collect();
    assert_eq!(ids.len(), 40);
    // Another cluster's namespace sees none of it.
    let other = MachineRegistry::connect(&redis.url(), "elsewhere")
        .await
        .unwrap();
    assert!(other.is_empty());
    // A finished cluster forgotten: a new one of that name starts empty.
    MachineRegistry::forget(&redis.url(), "conflicts")
        .await
        .unwrap();
    let again = MachineRegistry::connect(&redis.url(), "conflicts")
        .await
        .unwrap();
    assert!(again.is_empty());
    redis.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_goes_away_is_a_clear_error() {
    let Some(redis) = local_redis("registry outage").await else {
        return;
    };
    let url = redis.url();
    let registry = MachineRegistry::connect(&url, "outage").await.unwrap();
    let (kept, _) = machine("kept");
    registry.register(kept.clone()).await.unwrap();
    redis.stop().await;
    let (new, _) = machine("late");
    let error = tokio::time::timeout(Duration::from_secs(10), registry.register(new))
        .await
        .expect("no hang while the store is gone")
        .unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, RegisterError::Store(_)), "{error:?}");
    assert!(
        text.contains(&url) && text.contains("unreachable"),
        "{text}"
    );
    // What this process knew is still served from its copy.
    assert!(registry.by_thumbprint(&kept.thumbprint).is_some());
    let refused = MachineRegistry::connect("redis://127.0.0.1:1", "x")
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("redis://127.0.0.1:1"),
        "{refused}"
    );
}

/// Two nodes that share nothing but Redis, as two node processes do.
async fn node(n: u16, identity: &Identity, key: &ApiKey, url: &str) -> Node {
    let registry = MachineRegistry::connect(url, "nodes").await.unwrap();
    let bind = || octopoll_node::tcp::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    Node::start(
        NodeConfig::new(NodeId(n), key.clone()),
        identity,
        registry,
        bind(),
        bind(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_through_one_node_an_agent_polls_the_other_at_once() {
    common::init_logging();
    let Some(redis) = local_redis("nodes sharing a registry").await else {
        return;
    };
    let server = Identity::generate("server", KeyType::EcdsaP256).unwrap();
    let key = ApiKey::random();
    let one = node(1, &server, &key, &redis.url()).await;
    let two = node(2, &server, &key, &redis.url()).await;
    let client = RegistrationClient::new(&RegistrationTrust::Pinned(server.thumbprint())).unwrap();

    // Register through node 1 and poll node 2 right away, many times over: node 2
    // may not have heard of the machine yet, and must ask Redis rather than refuse.
    let mut agents = Vec::new();
    for i in 0..20 {
        let name = format!("agent-{i:02}");
        let identity = Identity::generate(&name, KeyType::EcdsaP256).unwrap();
        let subscription = SubscriptionId::random(&mut rand::rng());
        client
            .register(
                &one.api_url(),
                &key,
                &machine_resource(&name, identity.thumbprint(), &subscription),
            )
            .await
            .unwrap();
        let mut config = AgentConfig::default();
        // A refusal would show as a retry much later: keep retries slow.
        config.polling.backoff = BackoffConfig::default();
        let agent = Agent {
            name,
            servers: trusted_servers(
                &[two.comms_addr().into(), one.comms_addr().into()],
                server.thumbprint(),
                &subscription,
            ),
            identity,
            subscription,
            config,
        };
        agents.push(agent.start().unwrap());
    }
    wait_until(
        Duration::from_secs(10),
        "every agent identified with both nodes at the first attempt",
        || agents.iter().map(|a| a.connections()).sum::<usize>(),
        |&n| n == 40,
    )
    .await;
    assert!(agents.iter().all(|a| a.failures() == 0));
    assert_eq!(two.stats().refused_untrusted, 0);

    // A machine whose announcement node 2 never got (written straight into Redis,
    // as if the message were still on its way): node 2 looks it up and accepts it.
    let (unannounced, identity) = machine("unannounced");
    let record = octopoll_node::Machine {
        id: "Machines-900".into(),
        name: unannounced.name.clone(),
        thumbprint: unannounced.thumbprint,
        endpoint: unannounced.endpoint.clone(),
        roles: vec![],
        environments: vec![],
    };
    let mut redis_connection = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("HSET")
        .arg("octopoll:nodes:machines")
        .arg(record.thumbprint.to_string())
        .arg(serde_json::to_string(&record).unwrap())
        .query_async::<()>(&mut redis_connection)
        .await
        .unwrap();
    assert_eq!(two.stats().subscriptions, 20);
    drop(common::identify_raw(&two, &identity, record.subscription().unwrap()).await);

    // A certificate nobody registered passes the handshake of the deferring node,
    // and is refused right after it, before the protocol.
    let stranger = Identity::generate("stranger", KeyType::EcdsaP256).unwrap();
    let mut exchange = common::connect_raw(&two, &stranger).await;
    exchange.write_preamble().await.ok();
    assert!(exchange.read_identity().await.is_err());
    wait_until(
        Duration::from_secs(5),
        "the stranger counted as untrusted",
        || two.stats().refused_untrusted,
        |&n| n == 1,
    )
    .await;
    for agent in agents {
        agent.stop().await;
    }
    one.stop().await;
    two.stop().await;
    redis.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_comes_back_empty_is_detected_and_said() {
    let Some(redis) = local_redis("registry emptied").await else {
        return;
    };
    let (a, b) = pair(&redis.url(), "emptied").await;
    for name in ["web-01", "web-02", "web-03"] {
        a.register(machine(name).0).await.unwrap();
    }
    wait_until(
        Duration::from_secs(5),
        "b sees the three",
        || b.len(),
        |n| *n == 3,
    )
    .await;
    assert_eq!(b.store_emptied(), 0);
    // What a Redis restarted without persistence looks like: the data gone, and
    // every connection dropped (so each process subscribes again and reloads).
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut connection)
        .await
        .unwrap();
    redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async::<()>(&mut connection)
        .await
        .unwrap();
    wait_until(
        Duration::from_secs(10),
        "b reloads and finds the registry empty",
        || (b.store_emptied(), b.len()),
        |(emptied, len)| *emptied == 1 && *len == 0,
    )
    .await;
    assert_eq!(
        a.store_emptied(),
        1,
        "every process that knew machines says so"
    );
    // Registering again fills it, and is not another loss.
    a.register(machine("web-04").0).await.unwrap();
    wait_until(
        Duration::from_secs(5),
        "b sees the newcomer",
        || b.len(),
        |n| *n == 1,
    )
    .await;
    assert_eq!(b.store_emptied(), 1);
    redis.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_link_that_goes_silent_is_noticed_followed_again_and_caught_up() {
    let Some(redis) = local_redis_on_tcp("registry silent link").await else {
        return;
    };
    // b reaches Redis through a chaos proxy; a directly.
    let chaos = octopoll_chaos::Chaos::new();
    let redis_addr = redis.url().trim_start_matches("redis://").to_owned();
    let proxy = chaos
        .create(octopoll_chaos::ProxyConfig::new(
            "redis",
            "127.0.0.1:0".parse().unwrap(),
            redis_addr,
        ))
        .await
        .unwrap();
    let a = MachineRegistry::connect(&redis.url(), "silent")
        .await
        .unwrap();
    let b = MachineRegistry::connect(&format!("redis://{}", proxy.listen), "silent")
        .await
        .unwrap();
    let (new, _) = machine("web-01");
    let thumbprint = new.thumbprint;
    a.register(new).await.unwrap();
    wait_until(
        Duration::from_secs(5),
        "b learns web-01",
        || b.len(),
        |n| *n == 1,
    )
    .await;

    // The link goes silent: nothing reaches b, and no FIN or RST says so.
    let hold = octopoll_chaos::Toxic::new(
        octopoll_chaos::ToxicKind::Timeout(octopoll_chaos::toxic::Timeout { timeout: 0 }),
        octopoll_chaos::Stream::Downstream,
    );
    let hold = chaos.add_toxic("redis", hold).await.unwrap();
    assert_eq!(
        a.deregister(&thumbprint).await.unwrap().map(|m| m.name),
        Some("web-01".into())
    );
    assert_eq!(b.store_channel_losses(), 0);
    // A ping unanswered within the bounds (5 s quiet + 3 s) says it.
    wait_until(
        Duration::from_secs(15),
        "b notices its silent change channel",
        || b.store_channel_losses(),
        |lost| *lost >= 1,
    )
    .await;
    assert!(
        b.trusted().contains(&thumbprint),
        "nothing could reach b while its link was silent"
    );

    // Once the link carries again, b subscribes anew and reloads: the removal it
    // never heard is caught up.
    chaos.remove_toxic("redis", &hold.name).await.unwrap();
    wait_until(
        Duration::from_secs(10),
        "b catches up with the removal it never heard",
        || (b.len(), b.trusted().contains(&thumbprint)),
        |state| *state == (0, false),
    )
    .await;
    chaos.shutdown().await;
    redis.stop().await;
}
