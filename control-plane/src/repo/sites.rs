//! LAN sites (the networks agents are found in), edges and the media keys
//! of origins.

use super::*;

impl Repo {
    pub fn put_site(&self, actor: &str, site: &Site, create: bool) -> Result<()> {
        clean_text("name", &site.name, 120)?;
        if site.cidrs.is_empty() || site.cidrs.len() > 256 {
            return Err(RepoError::Invalid("a site needs 1 to 256 CIDRs".into()));
        }
        for c in &site.cidrs {
            c.parse::<ipnet::IpNet>().map_err(|_| {
                RepoError::Invalid("cidrs must look like 10.1.0.0/16 or fd00::/8".into())
            })?;
        }
        let _g = self.lock()?;
        let k = key(&[&site.tenant, &site.id]);
        if !create && self.store.get(Table::Sites, &k)?.is_none() {
            return Err(RepoError::NotFound);
        }
        let mut b = Batch::default();
        b.put(Table::Sites, k, encode(site));
        self.commit(
            &site.tenant,
            b,
            vec![Entry::new(
                actor,
                if create { "create" } else { "change" },
                "site",
                &site.id,
            )],
        )
    }

    /// The tenant's site whose CIDRs contain `addr`, the longest prefix winning.
    pub fn site_of(&self, tenant: &str, addr: std::net::IpAddr) -> Result<Option<Site>> {
        let mut best: Option<(u8, Site)> = None;
        for site in self.sites(tenant)? {
            let longest = site
                .cidrs
                .iter()
                .filter_map(|c| c.parse::<ipnet::IpNet>().ok())
                .filter(|net| net.contains(&addr))
                .map(|net| net.prefix_len())
                .max();
            if let Some(len) = longest {
                if best.as_ref().is_none_or(|(l, _)| len > *l) {
                    best = Some((len, site));
                }
            }
        }
        Ok(best.map(|(_, s)| s))
    }

    pub fn sites(&self, tenant: &str) -> Result<Vec<Site>> {
        self.scan(Table::Sites, &prefix(&[tenant]))
    }

    pub fn site(&self, tenant: &str, id: &str) -> Result<Site> {
        if !valid_id("s", id) {
            return Err(RepoError::NotFound);
        }
        self.get(Table::Sites, &key(&[tenant, id]))
    }

    pub fn delete_site(&self, actor: &str, tenant: &str, id: &str) -> Result<()> {
        let _g = self.lock()?;
        self.site(tenant, id)?;
        let mut b = Batch::default();
        b.delete(Table::Sites, key(&[tenant, id]));
        self.commit(tenant, b, vec![Entry::new(actor, "delete", "site", id)])
    }

    pub fn put_edge(&self, edge: &EdgeRegistration) -> Result<()> {
        let mut b = Batch::default();
        b.put(Table::Edges, key(&["_platform", &edge.id]), encode(edge));
        self.store.write(b)?;
        Ok(())
    }

    /// Records an origin's media signing key (one per origin; a new one
    /// replaces it). Kept beside the edge registrations: platform data.
    pub fn put_media_key(&self, reg: &MediaKeyRegistration) -> Result<()> {
        let mut b = Batch::default();
        b.put(Table::Edges, key(&["_media", &reg.origin]), encode(reg));
        self.store.write(b)?;
        Ok(())
    }

    pub fn edges(&self) -> Result<Vec<EdgeRegistration>> {
        self.scan(Table::Edges, &prefix(&["_platform"]))
    }
}

#[cfg(test)]
mod tests {
    use super::super::in_memory;
    use super::*;

    fn site(tenant: &str, id: &str, cidrs: &[&str]) -> Site {
        Site {
            id: id.into(),
            tenant: tenant.into(),
            name: id.into(),
            cidrs: cidrs.iter().map(|c| c.to_string()).collect(),
            p2p: P2pMode::On,
        }
    }

    #[test]
    fn the_longest_prefix_decides_the_site_and_bad_cidrs_are_refused() {
        let repo = in_memory();
        let t = repo.create_tenant("Acme").unwrap().id;
        repo.put_site("u", &site(&t, "s_campus", &["10.0.0.0/8"]), true)
            .unwrap();
        repo.put_site(
            "u",
            &site(&t, "s_floor", &["10.1.2.0/24", "fd00::/8"]),
            true,
        )
        .unwrap();
        let of = |a: &str| repo.site_of(&t, a.parse().unwrap()).unwrap().map(|s| s.id);
        let cases = [
            ("10.1.2.3", Some("s_floor")),
            ("10.9.9.9", Some("s_campus")),
            ("fd12::1", Some("s_floor")),
            ("192.168.1.1", None),
            ("fe80::1", None),
        ];
        for (addr, want) in cases {
            assert_eq!(of(addr).as_deref(), want, "{addr}");
        }
        for bad in [
            &["10.0.0.0/33"][..],
            &["fd00::/129"],
            &["10.0.0.0"],
            &["x/8"],
            &[],
        ] {
            let err = repo.put_site("u", &site(&t, "s_bad", bad), true);
            assert!(matches!(err, Err(RepoError::Invalid(_))), "{bad:?}");
        }
        // Another tenant's addresses are not ours.
        let other = repo.create_tenant("Globex").unwrap().id;
        assert!(repo
            .site_of(&other, "10.1.2.3".parse().unwrap())
            .unwrap()
            .is_none());
    }
}
