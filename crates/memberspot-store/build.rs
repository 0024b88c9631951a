// `migrate!` embeds the files of `migrations/` with `include_str!`, which tracks only the
// files that existed at the last build: rebuild when one is added (sqlx's recipe).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
