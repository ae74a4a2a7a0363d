//! `webserver users add|passwd|del|list`: account management in Redis. Passwords are read from
//! standard input (with a prompt on a terminal) so they never appear in the process list.

use std::io::{BufRead, IsTerminal, Write};

use protocol::Name;

use crate::accounts::{hash_password, Account};
use crate::config::{Config, UsersCommand};
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error("reading the password: {0}")]
    Io(#[from] std::io::Error),
}

fn name(text: &str, what: &str) -> Result<Name, UsersError> {
    Name::parse(text).map_err(|e| UsersError::Invalid(format!("{what} {text:?}: {e}")))
}

/// Runs one users subcommand; returns what to print.
pub async fn run(config: &Config, command: &UsersCommand) -> Result<String, UsersError> {
    let target = config.redis.target().map_err(|e| UsersError::Invalid(e.to_string()))?;
    // Account commands never publish: the history settings do not matter here.
    let store = Store::new(&target, config.key_prefix(), protocol::HistorySettings::off(), Default::default())?;
    match command {
        UsersCommand::Add { name: user, groups } | UsersCommand::Passwd { name: user, groups } => {
            let adding = matches!(command, UsersCommand::Add { .. });
            let user = name(user, "user name")?;
            let groups = groups.iter().map(|g| name(g, "group")).collect::<Result<Vec<_>, _>>()?;
            let existing = store.account(&user).await?;
            match (&existing, adding) {
                (Some(_), true) => return Err(UsersError::Invalid(format!("user {user} exists; use 'users passwd'"))),
                (None, false) => return Err(UsersError::Invalid(format!("no user {user}; use 'users add'"))),
                _ => {}
            }
            let password = read_password(&format!("Password for {user}: "))?;
            let password_hash = hash_password(&password).map_err(|e| UsersError::Invalid(e.to_string()))?;
            let groups =
                if groups.is_empty() && !adding { existing.map(|a| a.groups).unwrap_or_default() } else { groups };
            store.put_account(&Account { name: user.clone(), password_hash, groups }).await?;
            Ok(format!("{} user {user}", if adding { "added" } else { "updated" }))
        }
        UsersCommand::Del { name: user } => {
            let user = name(user, "user name")?;
            if store.delete_account(&user).await? {
                Ok(format!("deleted user {user} and ended their sessions"))
            } else {
                Err(UsersError::Invalid(format!("no user {user}")))
            }
        }
        UsersCommand::List => {
            let mut out = String::new();
            for user in store.account_names().await? {
                let groups = store.account(&user).await?.map(|a| a.groups).unwrap_or_default();
                let groups: Vec<&str> = groups.iter().map(|g| g.as_str()).collect();
                out.push_str(&format!("{user}\t{}\n", groups.join(",")));
            }
            out.pop();
            Ok(out)
        }
    }
}

/// One line from standard input, with a prompt (and a confirmation) on a terminal.
fn read_password(prompt: &str) -> Result<String, UsersError> {
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    let read = |prompt: &str| -> Result<String, UsersError> {
        if terminal {
            eprint!("{prompt}");
            std::io::stderr().flush()?;
        }
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    };
    let password = read(prompt)?;
    if terminal && read("Again: ")? != password {
        return Err(UsersError::Invalid("passwords differ".to_owned()));
    }
    if password.is_empty() {
        return Err(UsersError::Invalid("no password given on standard input".to_owned()));
    }
    Ok(password)
}
