//! A small WebDriver client for the web console's browser tests: Chromium
//! driven by chromedriver, over WebDriver's JSON-over-HTTP protocol (W3C),
//! with the blocking HTTP client of [`crate::http`] and `serde_json`.
//!
//! Only what the tests use: a session, navigation, finding elements by CSS
//! selector, clicking, typing, reading text and properties, window sizes
//! and screenshots. Each command opens its own connection (chromedriver
//! answers with `Content-Length`, which the client needs).
//!
//! A crate such as fantoccini or thirtyfour would bring an async HTTP stack
//! and dozens of crates into the test build for the dozen calls made here.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::http::HttpConnection;

/// No wait for the page lasts longer than this (a hang guard, not a timing
/// assertion).
pub const PAGE_HANG_GUARD: Duration = Duration::from_secs(20);

/// The key W3C WebDriver names an element reference with.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where Debian installs the two programs.
const CHROMIUM_CANDIDATES: &[&str] = &["/usr/bin/chromium", "/usr/bin/chromium-browser"];
const CHROMEDRIVER_CANDIDATES: &[&str] = &["/usr/bin/chromedriver"];

/// Chromium and chromedriver, if both are installed.
pub fn find_browser() -> Option<(PathBuf, PathBuf)> {
    let first = |candidates: &[&str], name: &str| {
        candidates.iter().map(PathBuf::from).find(|path| path.exists()).or_else(|| on_path(name))
    };
    Some((first(CHROMIUM_CANDIDATES, "chromium")?, first(CHROMEDRIVER_CANDIDATES, "chromedriver")?))
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|dir| dir.join(name)).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|path| path.exists())
}

/// A running chromedriver with one browser session. Both end when dropped.
pub struct Browser {
    driver: Child,
    address: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

/// An element the page holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium with a
    /// fresh profile, `width`×`height` pixels.
    pub fn start(chromium: &Path, chromedriver: &Path, width: u32, height: u32) -> Browser {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|probe| probe.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut browser = Browser { driver, address, session: String::new(), _profile: profile };
        let deadline = Instant::now() + PAGE_HANG_GUARD;
        while std::net::TcpStream::connect(address).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on {address}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:loggingPrefs": { "browser": "ALL" },
                    "goog:chromeOptions": { "binary": chromium.display().to_string(), "args": args },
                }
            }
        });
        let created = browser.call("POST", "/session", Some(capabilities));
        browser.session = created["sessionId"].as_str().expect("a session id").to_owned();
        browser
    }

    /// Sends one WebDriver command; its `value`. Panics on an error answer.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, value) = self.try_call(method, path, body);
        assert!(status < 300, "WebDriver {method} {path}: {status} {value}");
        value
    }

    fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|body| body.to_string()).unwrap_or_default();
        // chromedriver refuses a Host that is not a loopback address.
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\n",
            self.address
        );
        request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        let response = HttpConnection::open(self.address)
            .raw(request.as_bytes())
            .unwrap_or_else(|| panic!("chromedriver closed the connection on {method} {path}"));
        let value = serde_json::from_slice::<Value>(&response.body).map(|mut reply| reply["value"].take());
        (response.status, value.unwrap_or(Value::Null))
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Loads `url` and waits for it.
    pub fn go(&self, url: &str) {
        self.call("POST", &self.session_path("/url"), Some(json!({ "url": url })));
    }

    /// Reloads the page and waits for it.
    pub fn refresh(&self) {
        self.call("POST", &self.session_path("/refresh"), Some(json!({})));
    }

    /// The page's address now.
    pub fn url(&self) -> String {
        self.call("GET", &self.session_path("/url"), None).as_str().unwrap_or_default().to_owned()
    }

    /// Resizes the window (the page's width, for the screenshots and the
    /// narrow layout), with a device pixel ratio of 1.
    pub fn resize(&self, width: u32, height: u32) {
        let metrics = json!({
            "cmd": "Emulation.setDeviceMetricsOverride",
            "params": { "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600 },
        });
        self.call("POST", &self.session_path("/goog/cdp/execute"), Some(metrics));
    }

    /// Makes the page see `prefers-color-scheme: scheme` (`light`, `dark`).
    pub fn color_scheme(&self, scheme: &str) {
        let media = json!({
            "cmd": "Emulation.setEmulatedMedia",
            "params": { "features": [{ "name": "prefers-color-scheme", "value": scheme }] },
        });
        self.call("POST", &self.session_path("/goog/cdp/execute"), Some(media));
    }

    /// Makes the page run in time zone `zone` (an IANA name).
    pub fn time_zone(&self, zone: &str) {
        let zone = json!({ "cmd": "Emulation.setTimezoneOverride", "params": { "timezoneId": zone } });
        self.call("POST", &self.session_path("/goog/cdp/execute"), Some(zone));
    }

    /// The page's cumulative layout shift so far (shifts right after input
    /// excluded, as browsers count it).
    pub fn layout_shift(&self) -> f64 {
        let script = "return new Promise((resolve) => {
            let total = 0;
            new PerformanceObserver((list) => {
                for (const entry of list.getEntries()) if (!entry.hadRecentInput) total += entry.value;
            }).observe({ type: 'layout-shift', buffered: true });
            setTimeout(() => resolve(total), 200);
        })";
        self.script(script).as_f64().expect("a number")
    }

    /// The first element `css` selects now, if any.
    pub fn find_now(&self, css: &str) -> Option<Element> {
        let query = json!({ "using": "css selector", "value": css });
        let (status, value) = self.try_call("POST", &self.session_path("/element"), Some(query));
        (status < 300).then(|| Element(value[ELEMENT_KEY].as_str().expect("an element reference").to_owned()))
    }

    /// Every element `css` selects now.
    pub fn find_all(&self, css: &str) -> Vec<Element> {
        let query = json!({ "using": "css selector", "value": css });
        let found = self.call("POST", &self.session_path("/elements"), Some(query));
        found
            .as_array()
            .map(|all| {
                all.iter()
                    .filter_map(|one| one[ELEMENT_KEY].as_str().map(|id| Element(id.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The first element `css` selects, waiting for one to be displayed.
    pub fn find(&self, css: &str) -> Element {
        self.wait_until(&format!("{css} to be shown"), || {
            self.find_now(css).filter(|element| self.displayed(element))
        })
    }

    /// Waits until `check` gives something; panics past the hang guard
    /// with `what` and the page's text.
    pub fn wait_until<T>(&self, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + PAGE_HANG_GUARD;
        loop {
            if let Some(found) = check() {
                return found;
            }
            if Instant::now() >= deadline {
                let page = self.find_now("body").map(|body| self.text(&body)).unwrap_or_default();
                panic!(
                    "waited for {what}; the page ({}) shows:\n{page}\nits console:\n{}",
                    self.url(),
                    self.console_log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the text of the element `css` selects contains `wanted`;
    /// that text.
    pub fn wait_text(&self, css: &str, wanted: &str) -> String {
        self.wait_until(&format!("{css} to say {wanted:?}"), || {
            let text = self.find_now(css).map(|element| self.text(&element))?;
            text.contains(wanted).then_some(text)
        })
    }

    pub fn click(&self, element: &Element) {
        self.call("POST", &self.session_path(&format!("/element/{}/click", element.0)), Some(json!({})));
    }

    /// Clicks the element `css` selects, once it is shown.
    pub fn click_on(&self, css: &str) {
        let element = self.find(css);
        self.click(&element);
    }

    /// Clears the field `css` selects and types `text` into it.
    pub fn fill(&self, css: &str, text: &str) {
        let element = self.find(css);
        self.call("POST", &self.session_path(&format!("/element/{}/clear", element.0)), Some(json!({})));
        self.call(
            "POST",
            &self.session_path(&format!("/element/{}/value", element.0)),
            Some(json!({ "text": text })),
        );
    }

    /// Types `keys` into `element` (focusing it first).
    pub fn send_keys(&self, element: &Element, keys: &str) {
        self.call(
            "POST",
            &self.session_path(&format!("/element/{}/value", element.0)),
            Some(json!({ "text": keys })),
        );
    }

    /// The element's text as rendered.
    pub fn text(&self, element: &Element) -> String {
        let path = self.session_path(&format!("/element/{}/text", element.0));
        let (status, value) = self.try_call("GET", &path, None);
        if status < 300 { value.as_str().unwrap_or_default().to_owned() } else { String::new() }
    }

    /// A DOM property of the element (`value` of a field, `disabled`).
    pub fn property(&self, element: &Element, name: &str) -> Value {
        self.call("GET", &self.session_path(&format!("/element/{}/property/{name}", element.0)), None)
    }

    pub fn displayed(&self, element: &Element) -> bool {
        let path = self.session_path(&format!("/element/{}/displayed", element.0));
        let (status, value) = self.try_call("GET", &path, None);
        status < 300 && value.as_bool() == Some(true)
    }

    /// The element that has the keyboard focus.
    pub fn focused(&self) -> Element {
        let value = self.call("GET", &self.session_path("/element/active"), None);
        Element(value[ELEMENT_KEY].as_str().expect("an active element").to_owned())
    }

    /// Sends keys to whatever has the focus (W3C key codes: Tab is
    /// `\u{E004}`, Enter `\u{E007}`).
    pub fn keys(&self, keys: &str) {
        let element = self.focused();
        self.call(
            "POST",
            &self.session_path(&format!("/element/{}/value", element.0)),
            Some(json!({ "text": keys })),
        );
    }

    /// Runs `script` in the page (for reading what the page cannot show,
    /// such as its storage); its result.
    pub fn script(&self, script: &str) -> Value {
        self.call("POST", &self.session_path("/execute/sync"), Some(json!({ "script": script, "args": [] })))
    }

    /// The cookies the browser holds for this page, as WebDriver shows them.
    pub fn cookies(&self) -> Vec<Value> {
        self.call("GET", &self.session_path("/cookie"), None).as_array().cloned().unwrap_or_default()
    }

    /// What the page wrote to its console (and its errors) since the last
    /// call, one line per entry.
    pub fn console_log(&self) -> String {
        let (_, entries) =
            self.try_call("POST", &self.session_path("/se/log"), Some(json!({ "type": "browser" })));
        entries
            .as_array()
            .map(|all| all.iter().map(|entry| format!("{} {}\n", entry["level"], entry["message"])).collect())
            .unwrap_or_default()
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Vec<u8> {
        let encoded = self.call("GET", &self.session_path("/screenshot"), None);
        decode_base64(encoded.as_str().expect("base64 PNG"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.try_call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Standard base64 (WebDriver's screenshots), written here: the tests need
/// no more of it than this.
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |byte: u8| -> Option<u32> {
        Some(match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let digits: Vec<u32> = text.bytes().filter_map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, digit)| n | (digit << (18 - 6 * i)));
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len().saturating_sub(1)]);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_decodes() {
        assert_eq!(super::decode_base64("aWdneTppZ2d5"), b"iggy:iggy");
        assert_eq!(super::decode_base64("YWI6Y2Q="), b"ab:cd");
        assert_eq!(super::decode_base64("YTpi"), b"a:b");
        assert_eq!(super::decode_base64("YQ=="), b"a");
    }
}
