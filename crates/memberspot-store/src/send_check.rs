//! A compile-time check that the store's public futures can be spawned.

use crate::{
    AuditFilter, ChainHead, ConnectionUpdate, NewAuditRecord, NewConnection, NewPersona, Store,
};

/// Every public future must be `Send` for any borrow (the hub awaits them in spawned tasks);
/// generic sqlx executors easily lose that, so check it at compile time.
#[allow(dead_code)]
fn public_futures_are_send() {
    fn spawnable<T: std::future::Future + Send + 'static>(_: T) {}
    spawnable(async {
        let Ok(s) = Store::open("").await else {
            return;
        };
        let name = String::new();
        let _ = s.get_meta(&name).await;
        let _ = s.set_meta(&name, &name).await;
        let c = NewConnection {
            name: name.clone(),
            base_url: name.clone(),
            sealed_key: name.clone(),
            key_hint: name.clone(),
            rate_limit: 0.0,
        };
        let _ = s.insert_connection(&c).await;
        let _ = s.list_connections().await;
        let _ = s.get_connection(&name).await;
        let _ = s.update_connection_key(&name, &name, &name).await;
        let _ = s
            .update_connection(
                &name,
                &ConnectionUpdate::default(),
                |_, _| Ok(String::new()),
            )
            .await;
        let _ = s
            .migrate_connection_keys(&name, |_| Ok(None::<String>))
            .await;
        let _ = s.audit_head().await;
        let _ = s.delete_connection(&name).await;
        let _ = s.reseal_all_connections(|x| Ok(x.sealed_key.clone())).await;
        let _ = s
            .reseal_all_connections_and_set_meta(|x| Ok(x.sealed_key.clone()), &name, &name)
            .await;
        let p = NewPersona {
            name: name.clone(),
            description: name.clone(),
            connection: name.clone(),
            scopes: Vec::new(),
            offer_ids: None,
            calls_per_minute: None,
            token_hash: name.clone(),
            token_prefix: name.clone(),
        };
        let _ = s.insert_persona(&p).await;
        let _ = s.replace_revoked_persona(&p).await;
        let _ = s.list_personas().await;
        let _ = s.get_persona(&name).await;
        let _ = s.get_persona_by_token_hash(&name).await;
        let _ = s.update_persona_scopes(&name, &[], None, None).await;
        let _ = s.set_persona_token(&name, &name, &name).await;
        let _ = s.revoke_persona(&name).await;
        let r = NewAuditRecord {
            at: 0,
            request_id: name.clone(),
            surface: crate::Surface::Cli,
            connection: None,
            persona: None,
            end_user: None,
            prompt: None,
            tool: name.clone(),
            arguments: serde_json::Value::Null,
            outcome: crate::AuditOutcome::Ok,
            response: None,
            error: None,
            upstream_status: None,
            latency_ms: 0,
            oauth_client: None,
        };
        let _ = s.append_audit(&r).await;
        let _ = s.query_audit(&AuditFilter::default()).await;
        let _ = s.verify_audit().await;
        let head = ChainHead {
            seq: 0,
            hash: name.clone(),
        };
        let _ = s.verify_audit_anchor(&head).await;
        let _ = s.purge_audit_before(0).await;
        // The views of the events subsystem and of flows.
        let _ = s.events().claim_events(&name, 1, 0).await;
        let _ = s.events().list_events(&crate::EventFilter::default()).await;
        let _ = s.flows().list_runs(None, 1).await;
        let _ = s.flows().audit_head().await;
        s.close().await;
    });
}
