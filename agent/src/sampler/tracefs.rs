//! Field offsets of tracepoints, read from this kernel's tracefs `format` files.
use std::path::Path;

use crate::{Error, Result};

/// A field of a tracepoint record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Byte offset in the record.
    pub offset: u32,
    /// Size in bytes.
    pub size: u32,
}

/// Finds `field` in the format description of tracepoint `category/name`.
pub fn field(tracefs: &Path, category: &str, name: &str, field: &str) -> Result<Field> {
    let path = tracefs
        .join("events")
        .join(category)
        .join(name)
        .join("format");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::UnsupportedKernel(format!("tracepoint {category}/{name} unavailable ({e})"))
    })?;
    parse_field(&text, field).ok_or_else(|| {
        Error::UnsupportedKernel(format!(
            "tracepoint {category}/{name} has no field {field} in {}",
            path.display()
        ))
    })
}

/// Parses one `field:TYPE NAME; offset:N; size:N; signed:N;` line out of a format file.
pub fn parse_field(format: &str, name: &str) -> Option<Field> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';').map(str::trim);
        let decl = parts.next()?.strip_prefix("field:")?;
        let declared = decl.rsplit(' ').next()?;
        let declared = declared.split('[').next()?;
        if declared != name {
            return None;
        }
        let mut get = |key: &str| -> Option<u32> { parts.next()?.strip_prefix(key)?.parse().ok() };
        Some(Field {
            offset: get("offset:")?,
            size: get("size:")?,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SWITCH: &str = "name: sched_switch\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:char prev_comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
\tfield:long prev_state;\toffset:32;\tsize:8;\tsigned:1;\n\
\tfield:pid_t next_pid;\toffset:56;\tsize:4;\tsigned:1;\n";

    #[test]
    fn finds_fields_by_name() {
        assert_eq!(
            parse_field(SWITCH, "prev_state"),
            Some(Field {
                offset: 32,
                size: 8
            })
        );
        assert_eq!(
            parse_field(SWITCH, "next_pid"),
            Some(Field {
                offset: 56,
                size: 4
            })
        );
        assert_eq!(
            parse_field(SWITCH, "prev_comm"),
            Some(Field {
                offset: 8,
                size: 16
            })
        );
        assert_eq!(parse_field(SWITCH, "pid"), None);
    }
}
