//! A real headless Chromium driven through WebDriver (chromedriver), for the web
//! inspector's tests.
//!
//! Uses Debian's `chromium` and `chromium-driver` (`/usr/bin/chromium`,
//! `/usr/bin/chromedriver`; `COLLOQUY_CHROMIUM` and `COLLOQUY_CHROMEDRIVER` point
//! elsewhere). Nothing is downloaded: a missing browser fails the test with the command
//! that installs it. Each test has its own chromedriver on a free port and its own
//! browser profile, so tests run side by side.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Map, Value};

use crate::helpers::{TestApp, ADMIN_TOKEN};

/// How long the browser is given to show what a test waits for.
const PATIENCE: Duration = Duration::from_secs(20);

pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

fn program(variable: &str, default: &str) -> PathBuf {
    std::env::var_os(variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port for chromedriver")
}

impl Browser {
    pub async fn start() -> Browser {
        let (chromium, chromedriver) = (
            program("COLLOQUY_CHROMIUM", "/usr/bin/chromium"),
            program("COLLOQUY_CHROMEDRIVER", "/usr/bin/chromedriver"),
        );
        assert!(
            chromium.exists() && chromedriver.exists(),
            "the inspector's browser tests need {} and {}: \
             `apt-get install -y chromium chromium-driver` (README, \"Running the tests\")",
            chromium.display(),
            chromedriver.display()
        );
        let port = free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().unwrap();
        let mut capabilities = Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--window-size=1280,900",
                    "--no-first-run", "--disable-extensions",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let deadline = Instant::now() + PATIENCE;
        let client = loop {
            let attempt = ClientBuilder::new(connector.clone())
                .capabilities(capabilities.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await;
            match attempt {
                Ok(client) => break client,
                Err(error) if Instant::now() < deadline => {
                    log::debug!("chromedriver not ready yet: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("no WebDriver session with chromedriver: {error}"),
            }
        };
        Browser {
            client,
            driver,
            _profile: profile,
        }
    }

    /// Opens the inspector and logs in with `token`.
    pub async fn log_in(&self, app: &TestApp, token: &str) {
        self.client
            .goto(&format!("{}/admin/", app.admin_url))
            .await
            .unwrap();
        self.by_testid("login-token")
            .await
            .send_keys(token)
            .await
            .unwrap();
        self.by_testid("login-submit").await.click().await.unwrap();
    }

    /// Logs in with the right token and waits for the conversation list.
    pub async fn log_in_as_admin(&self, app: &TestApp) {
        self.log_in(app, ADMIN_TOKEN).await;
        self.wait_for("the conversation list", || async {
            self.client
                .find(Locator::Css("h1"))
                .await
                .ok()?
                .text()
                .await
                .ok()
                .filter(|t| t == "Conversations")
        })
        .await;
    }

    pub async fn by_testid(&self, id: &str) -> Element {
        self.client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(&format!("[data-testid=\"{id}\"]")))
            .await
            .unwrap_or_else(|e| panic!("no element data-testid={id}: {e}"))
    }

    /// Clicks the element with this `data-testid`, finding it again when the live part of
    /// the page was re-rendered between finding and clicking (a stale element).
    pub async fn click(&self, id: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.by_testid(id).await.click().await {
                Ok(()) => return,
                Err(error) if Instant::now() < deadline => {
                    log::debug!("clicking {id} again: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => panic!("cannot click data-testid={id}: {error}"),
            }
        }
    }

    pub async fn all_by_testid(&self, id: &str) -> Vec<Element> {
        self.client
            .find_all(Locator::Css(&format!("[data-testid=\"{id}\"]")))
            .await
            .unwrap_or_default()
    }

    /// The texts of every element with this `data-testid`, in page order, read in one
    /// script run (the live part of a page may be re-rendered between WebDriver calls).
    pub async fn texts(&self, id: &str) -> Vec<String> {
        let script = format!(
            "return Array.from(document.querySelectorAll('[data-testid=\"{id}\"]'))\
             .map(e => e.innerText)"
        );
        let texts = self
            .client
            .execute(&script, vec![])
            .await
            .unwrap_or_default();
        serde_json::from_value(texts).unwrap_or_default()
    }

    /// Polls `probe` until it gives something, or fails the test naming `what`.
    pub async fn wait_for<T, F, Fut>(&self, what: &str, mut probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(found) = probe().await {
                return found;
            }
            if Instant::now() > deadline {
                let source = self.client.source().await.unwrap_or_default();
                panic!("timed out waiting for {what}; the page:\n{source}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the conversation page follows the live stream.
    pub async fn wait_until_live(&self) {
        self.wait_for("the page to follow /admin/events", || async {
            let on = self
                .client
                .execute("return document.body.dataset.live || ''", vec![])
                .await
                .ok()?;
            (on == json!("on")).then_some(())
        })
        .await;
    }

    /// Runs `script` (which gets a `done` callback as its last argument) in the page.
    pub async fn run_async(&self, script: &str) -> Value {
        self.client
            .execute_async(script, vec![])
            .await
            .expect("the script runs")
    }

    /// Saves a screenshot as `target/screenshots/{name}.png` (for docs/).
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A failed test never reaches `close`: chromedriver (and with it the browser)
        // still goes.
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
