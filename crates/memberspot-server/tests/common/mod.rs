//! Databases for the server's tests: a SQLite file, or a fresh PostgreSQL database.

#![allow(dead_code)]

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn pg_admin_url() -> String {
    std::env::var("MEMBERSPOT_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database URL for `backend` (a file in `dir` for SQLite), and the PostgreSQL
/// database's name, to drop with [`drop_database`].
pub async fn database(backend: Backend, dir: &std::path::Path) -> (String, Option<String>) {
    match backend {
        Backend::Sqlite => (format!("sqlite://{}", dir.join("hub.db").display()), None),
        Backend::Postgres => {
            let (url, name) = fresh_postgres().await;
            (url, Some(name))
        }
    }
}

/// A new, empty PostgreSQL database: its URL and its name (to drop with
/// [`drop_database`]).
pub async fn fresh_postgres() -> (String, String) {
    use sqlx::Connection;
    let admin = pg_admin_url();
    let name = format!("srv_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL must be running ({admin}): {e}"));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create database");
    let (base, _) = admin.rsplit_once('/').expect("a database URL");
    (format!("{base}/{name}"), name)
}

pub async fn drop_database(name: &str) {
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_admin_url()).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await;
    }
}
