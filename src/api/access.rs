//! Who may do what to a server: the one rule every door asks (the web pages, the JSON API, the
//! app proxy, the browser terminal, the bastion). Pure: the server and the person in, a yes or
//! a no out.
//!
//! The owner and compute-server admins may do everything. Others reach a server only through
//! its `spec.sharedWith`, by their user name or one of their groups, with the highest role any
//! entry gives them:
//! - `view`: see it (page, JSON API, status, Events) and open its web apps;
//! - `use`: also its terminal, SSH through the bastion, start, stop and keep running;
//! - `admin`: also change `sharedWith`, granting roles up to `use`.
//!
//! Nobody but the owner and compute-server admins deletes a server, changes its size or
//! profile, takes its snapshots or moves it. Someone a server is not shared with cannot tell
//! it from one that does not exist.

use serde::{Deserialize, Serialize};

use super::ComputeServer;

/// A role a server is shared with, weakest first.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sees the server, its status and Events, and opens its web apps.
    View,
    /// Also opens its terminal, logs in over SSH through the bastion, starts, stops and keeps it running.
    Use,
    /// Also changes whom it is shared with, with roles up to `use`.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::View => "view",
            Role::Use => "use",
            Role::Admin => "admin",
        }
    }
}

/// One entry of `spec.sharedWith`: a user or a group, and their role.
#[derive(kube::KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[x_kube(validation = kube::core::Rule::new("has(self.user) != has(self.group)").message("each sharedWith entry names a user or a group, not both"))]
pub struct Share {
    /// A Keycloak user name (preferred_username).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub user: Option<String>,
    /// A Keycloak group, such as "students" (everyone in it, now or later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub group: Option<String>,
    /// view, use or admin.
    pub role: Role,
}

impl Share {
    /// "user bob" or "group students".
    pub fn who(&self) -> String {
        match (&self.user, &self.group) {
            (Some(user), _) => format!("user {user}"),
            (None, Some(group)) => format!("group {group}"),
            (None, None) => "nobody".into(),
        }
    }

    /// The entry as it is stored: names without the spaces a paste brings, a group without
    /// Keycloak's leading `/`.
    pub fn normalized(self) -> Share {
        Share {
            user: self.user.map(|u| u.trim().to_string()),
            group: self.group.map(|g| g.trim().trim_start_matches('/').to_string()),
            role: self.role,
        }
    }

    /// Whether this entry names the same user or group as `other`.
    pub fn same_subject(&self, other: &Share) -> bool {
        self.user == other.user && self.group.as_deref().map(bare) == other.group.as_deref().map(bare)
    }
}

/// Someone asking, as a verified source says: the web front's token, the bastion's login.
#[derive(Clone, Copy, Debug)]
pub struct Person<'a> {
    /// The Keycloak user name.
    pub name: &'a str,
    /// Their Keycloak groups (a leading `/` is ignored).
    pub groups: &'a [String],
    /// A compute-server admin.
    pub admin: bool,
}

/// What someone holds on a server, weakest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Shared with them in this role.
    Shared(Role),
    /// A compute-server admin's.
    Admin,
    /// Theirs.
    Owner,
}

impl Access {
    /// "owner", "admin (compute-server)", "use", ...: for pages and the JSON API.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Owner => "owner",
            Access::Admin => "compute-server admin",
            Access::Shared(role) => role.as_str(),
        }
    }
}

/// What one asks to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// See it, its status and Events; open its web apps.
    View,
    /// Terminal, SSH, start, stop, keep running.
    Use,
    /// Change `sharedWith`.
    Share,
    /// Delete, resize, change the profile, snapshots, move.
    Own,
}

fn bare(group: &str) -> &str {
    group.trim_start_matches('/')
}

/// What `who` holds on `server`: `None` when it is not theirs and not shared with them.
pub fn access(server: &ComputeServer, who: &Person) -> Option<Access> {
    if server.spec.owner == who.name {
        return Some(Access::Owner);
    }
    if who.admin {
        return Some(Access::Admin);
    }
    server
        .spec
        .shared_with
        .iter()
        .filter(|share| match (&share.user, &share.group) {
            (Some(user), _) => user == who.name,
            (None, Some(group)) => who.groups.iter().any(|g| bare(g) == bare(group)),
            (None, None) => false,
        })
        .map(|share| share.role)
        .max()
        .map(Access::Shared)
}

impl Access {
    /// Whether this access allows `action`.
    pub fn allows(self, action: Action) -> bool {
        match (self, action) {
            (Access::Owner | Access::Admin, _) => true,
            (Access::Shared(_), Action::View) => true,
            (Access::Shared(role), Action::Use) => role >= Role::Use,
            (Access::Shared(role), Action::Share) => role == Role::Admin,
            (Access::Shared(_), Action::Own) => false,
        }
    }
}

/// Whether `who` may do `action` to `server`.
pub fn may(server: &ComputeServer, who: &Person, action: Action) -> bool {
    access(server, who).is_some_and(|a| a.allows(action))
}

/// Why a change of `sharedWith` is refused, in words for the person who asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShareRefusal {
    #[error(
        "only {owner}, a compute-server admin or someone it is shared with as admin may change whom {name} is shared with"
    )]
    NotAllowed { owner: String, name: String },
    #[error("{0} is the owner: the server is theirs already")]
    Owner(String),
    #[error("{0} is listed twice; give each user or group one role")]
    Twice(String),
    #[error(
        "a sharee with role admin may share with roles up to use, and may not change the admins' entries ({0})"
    )]
    AdminEntry(String),
    #[error("at most {MAX_SHARES} entries")]
    TooMany,
    #[error("{0}")]
    Invalid(String),
}

/// How many entries `sharedWith` holds at most.
pub const MAX_SHARES: usize = 64;

/// Whether `who` may set `server`'s `sharedWith` to `new`: the owner and compute-server admins
/// may set any list; an `admin` sharee any that keeps the admins' entries as they are.
pub fn check_shares(server: &ComputeServer, who: &Person, new: &[Share]) -> Result<(), ShareRefusal> {
    let access = access(server, who)
        .filter(|a| a.allows(Action::Share))
        .ok_or_else(|| ShareRefusal::NotAllowed {
            owner: server.spec.owner.clone(),
            name: kube::ResourceExt::name_any(server),
        })?;
    if new.len() > MAX_SHARES {
        return Err(ShareRefusal::TooMany);
    }
    for (n, share) in new.iter().enumerate() {
        let name = share.user.as_deref().or(share.group.as_deref()).unwrap_or("");
        if share.user.is_some() == share.group.is_some() {
            return Err(ShareRefusal::Invalid(
                "each entry names a user or a group, not both".into(),
            ));
        }
        if name.trim().is_empty() || name.len() > 253 || name.chars().any(char::is_control) {
            return Err(ShareRefusal::Invalid(format!(
                "{:?} is not a user or group name",
                name
            )));
        }
        if share.user.as_deref() == Some(server.spec.owner.as_str()) {
            return Err(ShareRefusal::Owner(server.spec.owner.clone()));
        }
        if new[..n].iter().any(|other| other.same_subject(share)) {
            return Err(ShareRefusal::Twice(share.who()));
        }
    }
    if matches!(access, Access::Shared(_)) {
        let admins = |list: &[Share]| -> Vec<Share> {
            list.iter().filter(|s| s.role == Role::Admin).cloned().collect()
        };
        let (before, after) = (admins(&server.spec.shared_with), admins(new));
        if before != after {
            let changed = after
                .iter()
                .find(|s| !before.contains(s))
                .or_else(|| before.iter().find(|s| !after.contains(s)))
                .map_or_else(String::new, Share::who);
            return Err(ShareRefusal::AdminEntry(changed));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(owner: &str, shares: &str) -> ComputeServer {
        serde_yaml::from_str(&format!(
            "apiVersion: computeserver.io/v1alpha1\nkind: ComputeServer\n\
             metadata: {{name: dev, namespace: compute}}\n\
             spec: {{owner: {owner}, sharedWith: [{shares}]}}\n"
        ))
        .unwrap()
    }

    fn person<'a>(name: &'a str, groups: &'a [String]) -> Person<'a> {
        Person {
            name,
            groups,
            admin: false,
        }
    }

    #[test]
    fn the_highest_role_of_any_entry_counts_and_groups_match_with_or_without_a_slash() {
        let s = server(
            "alice",
            "{user: bob, role: view}, {group: /students, role: use}, {group: staff, role: admin}",
        );
        let students = vec!["students".to_string()];
        let staff = vec!["/staff".to_string()];
        assert_eq!(access(&s, &person("bob", &[])), Some(Access::Shared(Role::View)));
        assert_eq!(
            access(&s, &person("bob", &students)),
            Some(Access::Shared(Role::Use))
        );
        assert_eq!(
            access(&s, &person("carol", &staff)),
            Some(Access::Shared(Role::Admin))
        );
        assert_eq!(access(&s, &person("eve", &[])), None);
        assert_eq!(access(&s, &person("alice", &[])), Some(Access::Owner));
        let ops = Person {
            name: "ops",
            groups: &[],
            admin: true,
        };
        assert_eq!(access(&s, &ops), Some(Access::Admin));
    }

    #[test]
    fn a_viewer_views_a_user_uses_an_admin_shares_and_only_the_owner_owns() {
        let s = server(
            "alice",
            "{user: carol, role: view}, {user: bob, role: use}, {user: dan, role: admin}",
        );
        let table = [
            ("carol", [true, false, false, false]),
            ("bob", [true, true, false, false]),
            ("dan", [true, true, true, false]),
            ("alice", [true, true, true, true]),
            ("eve", [false, false, false, false]),
        ];
        for (name, expected) in table {
            let got = [Action::View, Action::Use, Action::Share, Action::Own]
                .map(|action| may(&s, &person(name, &[]), action));
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn an_admin_sharee_shares_up_to_use_and_leaves_the_admins_alone() {
        let s = server("alice", "{user: dan, role: admin}");
        let dan = person("dan", &[]);
        let share = |user: &str, role| Share {
            user: Some(user.into()),
            group: None,
            role,
        };
        let dan_admin = share("dan", Role::Admin);
        assert_eq!(
            check_shares(&s, &dan, &[dan_admin.clone(), share("bob", Role::Use)]),
            Ok(())
        );
        assert_eq!(
            check_shares(&s, &dan, &[dan_admin.clone(), share("bob", Role::Admin)])
                .unwrap_err()
                .to_string(),
            "a sharee with role admin may share with roles up to use, and may not change the admins' entries (user bob)"
        );
        assert!(check_shares(&s, &dan, &[]).is_err(), "nor remove an admin");
        let alice = person("alice", &[]);
        assert_eq!(check_shares(&s, &alice, &[share("bob", Role::Admin)]), Ok(()));
        assert_eq!(
            check_shares(&s, &person("bob", &[]), &[])
                .unwrap_err()
                .to_string(),
            "only alice, a compute-server admin or someone it is shared with as admin may change whom dev is shared with"
        );
        assert_eq!(
            check_shares(&s, &alice, &[share("alice", Role::Use)])
                .unwrap_err()
                .to_string(),
            "alice is the owner: the server is theirs already"
        );
        let pasted = Share {
            user: None,
            group: Some(" /staff\n".into()),
            role: Role::View,
        };
        assert_eq!(pasted.normalized().group.as_deref(), Some("staff"));
        assert_eq!(
            check_shares(
                &s,
                &alice,
                &[share("bob ", Role::Use).normalized(), share("bob", Role::View)]
            )
            .unwrap_err()
            .to_string(),
            "user bob is listed twice; give each user or group one role"
        );
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    fn shares() -> impl Strategy<Value = Vec<Share>> {
        proptest::collection::vec(
            (
                proptest::bool::ANY,
                "(bob|carol|dan|students|staff)",
                prop_oneof![Just(Role::View), Just(Role::Use), Just(Role::Admin)],
            )
                .prop_map(|(is_user, name, role)| Share {
                    user: is_user.then(|| name.clone()),
                    group: (!is_user).then_some(name),
                    role,
                }),
            0..6,
        )
    }

    proptest! {
        /// The owner may do everything; nobody reaches a server not shared with them, whatever
        /// their groups; a `view` sharee never gets a shell; only owners and admins own.
        #[test]
        fn every_door_gets_the_same_answer(
            shares in shares(),
            name in "(alice|bob|carol|dan|eve)",
            groups in proptest::collection::vec("(students|staff|/students|others)", 0..3),
            admin in proptest::bool::weighted(0.1),
        ) {
            let mut server: ComputeServer = serde_yaml::from_str(
                "apiVersion: computeserver.io/v1alpha1\nkind: ComputeServer\n\
                 metadata: {name: dev, namespace: compute}\nspec: {owner: alice}\n",
            ).unwrap();
            server.spec.shared_with = shares.clone();
            let who = Person { name: &name, groups: &groups, admin };
            let got = access(&server, &who);
            if name == "alice" {
                prop_assert_eq!(got, Some(Access::Owner));
            }
            let named = shares.iter().any(|s| s.user.as_deref() == Some(name.as_str())
                || s.group.as_deref().is_some_and(|g| groups.iter().any(|m| bare(m) == bare(g))));
            if name != "alice" && !admin && !named {
                prop_assert_eq!(got, None, "reached without a share");
                for action in [Action::View, Action::Use, Action::Share, Action::Own] {
                    prop_assert!(!may(&server, &who, action));
                }
            }
            if got == Some(Access::Shared(Role::View)) {
                prop_assert!(!may(&server, &who, Action::Use), "a viewer got a shell");
            }
            prop_assert_eq!(may(&server, &who, Action::Own), name == "alice" || admin);
            // Each role allows what the weaker ones do.
            for action in [Action::View, Action::Use, Action::Share, Action::Own] {
                if may(&server, &who, action) {
                    prop_assert!(may(&server, &who, Action::View));
                }
            }
        }
    }
}
