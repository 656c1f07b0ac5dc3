use super::*;
use crate::flow::builtin::by_name;

fn default_flow() -> FlowHandle {
    by_name("thanks").expect("built in")
}

fn write(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("pages.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn problems(text: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let error = load(&write(dir.path(), text), &default_flow()).unwrap_err();
    error.problems.iter().map(ToString::to_string).collect()
}

const GOOD: &str = r#"
[apps.main]
secret = "main-secret"
verify_token = "verify-main"

[apps.other]
secret = "file:other.secret"
verify_token = "verify-other"

[[pages]]
id = "111"
app = "main"
access_token = "token-111"
flow = "echo"
send_rate = 50

[[pages]]
id = 222
app = "other"
access_token = "token-222"
channel = "instagram"

[pages.profile]
ice_breakers = [{ locale = "default", call_to_actions = [{ question = "Hours?", payload = "HOURS" }] }]
"#;

#[test]
fn a_sound_file_gives_every_page_its_app_token_channel_flow_and_rate() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("other.secret"), "other-secret\n").unwrap();
    let table = load(&write(dir.path(), GOOD), &default_flow()).unwrap();
    assert!(table.has_pages_file());
    let first = table.page("111").unwrap();
    assert_eq!(first.app, "main");
    assert_eq!(first.access_token.expose(), "token-111");
    assert_eq!(first.channel, Channel::Messenger);
    assert_eq!(first.flow_spec.as_deref(), Some("echo"));
    assert_eq!(first.send_rate, Some(50));
    let second = table.page("222").unwrap();
    assert_eq!(second.channel, Channel::Instagram);
    assert_eq!(second.flow_spec, None);
    assert_eq!(
        second.profile.as_ref().unwrap()["ice_breakers"][0]["call_to_actions"][0]["payload"],
        "HOURS"
    );
    // The secret file's trailing newline is not part of the secret.
    assert_eq!(table.app("other").unwrap().secret.expose(), "other-secret");
    let target = table.send_target("222").unwrap();
    assert_eq!(target.node, "222");
    assert_eq!(target.app_secret.expose(), "other-secret");
    assert!(table.send_target("333").is_none());
}

#[test]
fn every_problem_is_listed_with_its_place() {
    let listed = problems(
        r#"
[apps.main]
secret = "env:COLLOQUY_TEST_SURELY_UNSET_VARIABLE"
verify_token = "v"

[[pages]]
id = "1"
app = "main"
access_token = "file:/nonexistent/colloquy/token"
channel = "whatsapp"

[[pages]]
id = "1"
app = "nobody"
access_token = "t"
flow = "no-such-flow"
send_rate = -3
colour = "blue"
"#,
    );
    let expect = [
        "apps.main.secret: environment variable COLLOQUY_TEST_SURELY_UNSET_VARIABLE is not set",
        "pages[0] (id 1).access_token: cannot read secret file /nonexistent/colloquy/token",
        "pages[0] (id 1).channel: `whatsapp` is not a channel (messenger or instagram)",
        "pages[1] (id 1): duplicate id: pages[0] (id 1) has it too",
        "pages[1] (id 1).app: unknown app `nobody` (apps: main)",
        "pages[1] (id 1).flow: ",
        "pages[1] (id 1).send_rate: must be a whole number of calls per second",
        "pages[1] (id 1).colour: unknown key",
    ];
    for expected in expect {
        assert!(
            listed.iter().any(|problem| problem.starts_with(expected)),
            "{expected:?} not in {listed:#?}"
        );
    }
    assert!(
        listed.iter().any(|p| p.contains("no-such-flow")),
        "{listed:#?}"
    );
}

#[test]
fn a_problem_never_shows_a_secret_value() {
    std::env::set_var("COLLOQUY_TEST_PAGES_SECRET", "hunter2-secret-value");
    let listed = problems(
        r#"
[apps.main]
secret = "env:COLLOQUY_TEST_PAGES_SECRET"
verify_token = "plain-verify-value"

[[pages]]
id = "x1"
app = "main"
access_token = "plain-token-value"
"#,
    );
    let shown = listed.join("\n");
    assert!(shown.contains("is not a page id"), "{shown}");
    for secret in [
        "hunter2-secret-value",
        "plain-verify-value",
        "plain-token-value",
    ] {
        assert!(!shown.contains(secret), "{secret} leaked: {shown}");
    }
}

#[test]
fn a_syntax_error_an_empty_file_and_a_missing_file_are_problems() {
    let syntax = problems("[apps.main\nsecret = 1");
    assert!(syntax[0].starts_with("TOML: "), "{syntax:?}");
    let empty = problems("");
    assert!(empty.iter().any(|p| p.starts_with("apps: missing")));
    assert!(empty.iter().any(|p| p.starts_with("pages: missing")));
    let missing = load(Path::new("/nonexistent/pages.toml"), &default_flow()).unwrap_err();
    assert!(missing.to_string().contains("cannot read the file"));
}

#[test]
fn an_unknown_profile_field_is_a_problem() {
    let listed = problems(
        r#"
[apps.main]
secret = "s"
verify_token = "v"

[[pages]]
id = "1"
app = "main"
access_token = "t"
[pages.profile]
greting = [{ locale = "default", text = "typo" }]
"#,
    );
    assert!(
        listed[0].starts_with("pages[0] (id 1).profile.greting: unknown key"),
        "{listed:?}"
    );
}

#[test]
fn the_debug_output_of_a_table_shows_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("other.secret"), "other-secret\n").unwrap();
    let table = load(&write(dir.path(), GOOD), &default_flow()).unwrap();
    let shown = format!("{table:?}");
    for secret in ["main-secret", "verify-main", "token-111", "other-secret"] {
        assert!(!shown.contains(secret), "{secret} leaked: {shown}");
    }
}

#[test]
fn the_shipped_example_file_loads_with_its_secrets_in_place() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/pages.example.toml");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("pages.toml");
    std::fs::copy(&example, &copy).unwrap();
    std::fs::create_dir(dir.path().join("secrets")).unwrap();
    for (file, value) in [
        ("agency-app-secret", "agency-secret\n"),
        ("agency-page-token", "agency-token\n"),
    ] {
        std::fs::write(dir.path().join("secrets").join(file), value).unwrap();
    }
    for variable in [
        "BRAND_APP_SECRET",
        "BRAND_VERIFY_TOKEN",
        "AGENCY_VERIFY_TOKEN",
        "BRAND_EU_PAGE_TOKEN",
        "BRAND_US_PAGE_TOKEN",
    ] {
        std::env::set_var(variable, format!("{variable}-value"));
    }
    let table = load(&copy, &default_flow()).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(table.apps().len(), 2);
    let ids: Vec<&str> = table.pages().iter().map(|page| page.id.as_str()).collect();
    assert_eq!(
        ids,
        ["104000000000001", "104000000000002", "17841400000000003"]
    );
    let instagram = table.page("17841400000000003").unwrap();
    assert_eq!(instagram.channel, Channel::Instagram);
    assert_eq!(instagram.access_token.expose(), "agency-token");
    assert!(instagram.profile.as_ref().unwrap()["ice_breakers"].is_array());
    let first = table.page("104000000000001").unwrap();
    assert_eq!(
        first.profile.as_ref().unwrap()["greeting"][1]["locale"],
        "fr_FR"
    );
}

#[test]
fn an_instagram_profile_takes_only_what_instagram_supports() {
    let listed = problems(
        r#"
[apps.main]
secret = "s"
verify_token = "v"

[[pages]]
id = "1784"
app = "main"
access_token = "t"
channel = "instagram"
[pages.profile]
greeting = [{ locale = "default", text = "Hi" }]
ice_breakers = []
"#,
    );
    assert_eq!(
        listed,
        ["pages[0] (id 1784).profile.greeting: an Instagram account's profile takes only ice_breakers and persistent_menu"]
    );
}
