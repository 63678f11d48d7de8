//! Finding a running mailcow through Docker: its containers by Compose labels, and for each
//! selected component the volume that holds it.

use std::collections::BTreeMap;

use crate::docker::discover::{Container, PROJECT_LABEL, SERVICE_LABEL};
use crate::docker::{DockerError, Engine};

use super::components::Component;
use super::conf::MailcowConf;

#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(
        "mailcow not found: no container on {endpoint} has the label {PROJECT_LABEL}={project} (COMPOSE_PROJECT_NAME in {conf}); is mailcow installed and started (docker compose up -d)?"
    )]
    NoProject {
        endpoint: String,
        project: String,
        conf: String,
    },
    #[error(
        "{service} is not running (looked for a container with the labels {PROJECT_LABEL}={project} and {SERVICE_LABEL}={service}); {component} needs it: start mailcow (docker compose up -d)"
    )]
    NotRunning {
        service: &'static str,
        project: String,
        component: Component,
    },
    #[error(
        "the {component} volume was not found: no {service} container of project {project} mounts {destination}, and there is no volume {fallback}"
    )]
    NoVolume {
        component: Component,
        service: &'static str,
        project: String,
        destination: &'static str,
        fallback: String,
    },
}

/// What was found for a backup.
#[derive(Debug, Default)]
pub struct Found {
    /// The volume of each selected volume component.
    pub volumes: BTreeMap<Component, String>,
    /// The running containers commands are run in: `mysql-mailcow` and `redis-mailcow`.
    pub mysql: Option<Container>,
    pub redis: Option<Container>,
    /// `dovecot-mailcow`, when vmail is selected and the container exists (its file system
    /// shows whether the mail_crypt keys are there).
    pub dovecot: Option<Container>,
}

/// Finds what `components` need.
pub async fn discover(
    engine: &Engine,
    conf: &MailcowConf,
    components: &[Component],
) -> Result<Found, DiscoverError> {
    let containers = engine.project_containers(&conf.project).await?;
    discover_among(engine, conf, &containers, components).await
}

/// [`discover`] among the project's containers, already listed.
pub async fn discover_among(
    engine: &Engine,
    conf: &MailcowConf,
    containers: &[Container],
    components: &[Component],
) -> Result<Found, DiscoverError> {
    if containers.is_empty() {
        return Err(DiscoverError::NoProject {
            endpoint: engine.endpoint().to_string(),
            project: conf.project.clone(),
            conf: conf.path.display().to_string(),
        });
    }
    let of_service = |service: &str| containers.iter().find(|c| c.service == service);
    let running = |service: &'static str, component: Component| {
        of_service(service)
            .filter(|c| c.running)
            .cloned()
            .ok_or_else(|| DiscoverError::NotRunning {
                service,
                project: conf.project.clone(),
                component,
            })
    };
    let mut found = Found::default();
    for &component in components {
        match component {
            Component::Mysql => found.mysql = Some(running("mysql-mailcow", component)?),
            Component::Redis => found.redis = Some(running("redis-mailcow", component)?),
            Component::Vmail => found.dovecot = of_service("dovecot-mailcow").cloned(),
            _ => {}
        }
        let Some(source) = component.volume() else {
            continue;
        };
        let mounted = of_service(source.service).and_then(|c| c.volume_at(source.destination));
        let volume = match mounted {
            Some(name) => name.to_string(),
            None => {
                let fallback = format!("{}_{}", conf.project, source.volume);
                if !engine.volume_exists(&fallback).await? {
                    return Err(DiscoverError::NoVolume {
                        component,
                        service: source.service,
                        project: conf.project.clone(),
                        destination: source.destination,
                        fallback,
                    });
                }
                fallback
            }
        };
        found.volumes.insert(component, volume);
    }
    Ok(found)
}
