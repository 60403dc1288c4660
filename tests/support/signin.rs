//! Signing in on Keycloak's own pages without a browser: a cookie store that follows
//! redirects and posts Keycloak's HTML forms, as a person's browser would.

use std::sync::Arc;

use reqwest::StatusCode;

/// A cookie-keeping HTTP client that fills in Keycloak's forms.
pub struct FormClient {
    client: reqwest::Client,
    jar: Arc<reqwest::cookie::Jar>,
}

/// A page as the browser ended up showing it: status, address (after redirects) and HTML.
pub struct Page {
    pub status: StatusCode,
    pub url: String,
    pub html: String,
}

impl FormClient {
    /// A client that also trusts the CA in `ca_file` (Keycloak's https side), if given.
    pub fn new(ca_file: Option<&str>) -> FormClient {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let mut builder = reqwest::Client::builder().cookie_provider(jar.clone());
        if let Some(path) = ca_file {
            let pem = std::fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("a PEM CA"));
        }
        FormClient {
            client: builder.build().expect("an HTTP client"),
            jar,
        }
    }

    pub async fn get(&self, url: &str) -> Page {
        Page::read(self.client.get(url).send().await.expect("answers")).await
    }

    pub async fn post(&self, url: &str, form: &[(&str, &str)]) -> Page {
        Page::read(self.client.post(url).form(form).send().await.expect("answers")).await
    }

    /// Signs in as `user` (password = user name) on the Keycloak login page `page`; returns
    /// where that leads.
    pub async fn log_in(&self, page: &Page, user: &str) -> Page {
        let action = page.form_action("kc-form-login");
        self.post(&action, &[("username", user), ("password", user)]).await
    }

    /// The cookies it holds for `url`, as a Cookie header.
    pub fn cookies(&self, url: &str) -> String {
        use reqwest::cookie::CookieStore;
        self.jar
            .cookies(&url.parse().expect("a URL"))
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }
}

impl Page {
    async fn read(response: reqwest::Response) -> Page {
        let (status, url) = (response.status(), response.url().to_string());
        let html = response.text().await.expect("a body");
        Page { status, url, html }
    }

    /// The action URL of the form with id `id`.
    pub fn form_action(&self, id: &str) -> String {
        let at = self
            .html
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("no form {id} on {} ({}): {}", self.url, self.status, self.html));
        let form = &self.html[at..];
        let start = form.find("action=\"").expect("a form action") + 8;
        let end = start + form[start..].find('"').unwrap();
        form[start..end].replace("&amp;", "&")
    }
}
