//! Process layout from the usual launchers' environment, when flags do not give one.
//!
//! - Slurm: `SLURM_NTASKS` processes, this one `SLURM_PROCID`; hosts from `--hostfile` or
//!   `RECFLOW_HOSTS` (comma-separated `host:port`, in process order).
//! - Kubernetes indexed jobs: this process is `JOB_COMPLETION_INDEX`, there are
//!   `RECFLOW_PROCESSES`, and `RECFLOW_HOST_PATTERN` names each peer with `{i}` for its index,
//!   e.g. `recflow-{i}.recflow.default.svc.cluster.local:2101` (a headless service).

/// A process layout: (processes, this process, hosts or empty).
pub type Layout = (usize, usize, Vec<String>);

/// Reads a layout from `env` (a lookup function, so tests need not touch the real environment).
pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Option<Layout>, String> {
    let num = |k: &str| -> Result<Option<usize>, String> {
        env(k)
            .map(|v| {
                v.trim()
                    .parse::<usize>()
                    .map_err(|_| format!("{k}={v} is not a number"))
            })
            .transpose()
    };
    let hosts_env = env("RECFLOW_HOSTS")
        .map(|h| {
            h.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if let (Some(n), Some(p)) = (num("SLURM_NTASKS")?, num("SLURM_PROCID")?) {
        if n > 1 {
            return Ok(Some((n, p, hosts_env)));
        }
    }
    if let (Some(p), Some(n)) = (num("JOB_COMPLETION_INDEX")?, num("RECFLOW_PROCESSES")?) {
        let pattern = env("RECFLOW_HOST_PATTERN")
            .ok_or("JOB_COMPLETION_INDEX is set: also set RECFLOW_HOST_PATTERN, e.g. recflow-{i}.recflow:2101")?;
        if !pattern.contains("{i}") {
            return Err(format!("RECFLOW_HOST_PATTERN={pattern} must contain {{i}}"));
        }
        let hosts = (0..n)
            .map(|i| pattern.replace("{i}", &i.to_string()))
            .collect();
        return Ok(Some((n, p, hosts)));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn slurm_and_kubernetes() {
        assert_eq!(from_env(env(&[])).unwrap(), None);
        assert_eq!(
            from_env(env(&[
                ("SLURM_NTASKS", "3"),
                ("SLURM_PROCID", "2"),
                ("RECFLOW_HOSTS", "a:1,b:1,c:1")
            ]))
            .unwrap(),
            Some((3, 2, vec!["a:1".into(), "b:1".into(), "c:1".into()]))
        );
        assert_eq!(
            from_env(env(&[("SLURM_NTASKS", "1"), ("SLURM_PROCID", "0")])).unwrap(),
            None
        );
        assert_eq!(
            from_env(env(&[
                ("JOB_COMPLETION_INDEX", "1"),
                ("RECFLOW_PROCESSES", "2"),
                ("RECFLOW_HOST_PATTERN", "r-{i}.svc:2101")
            ]))
            .unwrap(),
            Some((2, 1, vec!["r-0.svc:2101".into(), "r-1.svc:2101".into()]))
        );
        assert!(from_env(env(&[
            ("JOB_COMPLETION_INDEX", "1"),
            ("RECFLOW_PROCESSES", "2")
        ]))
        .is_err());
        assert!(from_env(env(&[("SLURM_NTASKS", "x"), ("SLURM_PROCID", "0")])).is_err());
    }
}
