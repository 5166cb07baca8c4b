//! Retention sweeps and the access review.

use super::*;

impl Repo {
    /// Events whose retention period has run out by `at`.
    pub fn retention_due(&self, tenant: Option<&str>, at: OffsetDateTime) -> Result<Vec<Event>> {
        let tenants = match tenant {
            Some(t) => vec![t.to_owned()],
            None => self.tenants()?.into_iter().map(|t| t.id).collect(),
        };
        let mut due = Vec::new();
        for t in tenants {
            due.extend(
                self.events(&t)?
                    .into_iter()
                    .filter(|e| e.retention_due() <= at),
            );
        }
        Ok(due)
    }

    /// Deletes what has fallen due; returns the events deleted.
    pub fn sweep_retention(&self) -> Result<Vec<(String, String)>> {
        let mut done = Vec::new();
        for e in self.retention_due(None, now())? {
            self.delete_event("system", &e.tenant, &e.id)?;
            tracing::info!(tenant = %e.tenant, event = %e.id, "retention period over: event deleted");
            done.push((e.tenant, e.id));
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::super::in_memory;
    use super::*;

    #[test]
    fn an_event_falls_due_after_its_retention_unless_held() {
        let repo = in_memory();
        let t = repo.create_tenant("Acme").unwrap().id;
        let start = now() - time::Duration::days(40);
        let mut e = super::super::test_event(&t, start);
        e.ends_at = start + time::Duration::hours(1);
        let due = repo.create_event("u", e.clone()).unwrap();
        e.legal_hold_until = Some(now() + time::Duration::days(10));
        let held = repo.create_event("u", e).unwrap();
        let ids: Vec<String> = repo
            .retention_due(Some(&t), now())
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, [due.id.clone()]);
        let swept = repo.sweep_retention().unwrap();
        assert_eq!(swept, [(t.clone(), due.id)]);
        assert!(repo.event(&t, &held.id).is_ok());
    }
}
