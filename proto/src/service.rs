//! The six services: one table of names, transports and default ports, so
//! the daemon, the configuration and the client list them in one place.

/// How a service is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// One datagram is one message.
    Udp,
    /// A byte stream, framed by the protocol.
    Tcp,
}

/// One of the six lab protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceId {
    /// Seed 000: a JSON `file_info`, data datagrams, `OK` after a CRC-32 check.
    UdpUpload,
    /// Seed 001 §4: a name in, the file out in 2048-byte chunks.
    UdpDownload,
    /// Seed 001 §3: "adding two numbers".
    UdpSum,
    /// Seed 002: an 8-byte size, the name, `go ahead`, the data.
    TcpUpload,
    /// Seed 003: the COSC264 magic-number (0x497E) download.
    MagicDownload,
    /// Seed 004: SAF/RAF/SAR/RAR/PIN/PON/CLS/DON/ERR; also the health check.
    Signal,
}

impl ServiceId {
    /// Every service, in the order of their default ports.
    pub const ALL: [ServiceId; 6] = [
        ServiceId::UdpUpload,
        ServiceId::UdpDownload,
        ServiceId::UdpSum,
        ServiceId::TcpUpload,
        ServiceId::MagicDownload,
        ServiceId::Signal,
    ];

    /// The name in logs, the config (`[udp_upload]`) and the CLI.
    pub const fn name(self) -> &'static str {
        match self {
            ServiceId::UdpUpload => "udp_upload",
            ServiceId::UdpDownload => "udp_download",
            ServiceId::UdpSum => "udp_sum",
            ServiceId::TcpUpload => "tcp_upload",
            ServiceId::MagicDownload => "magic_download",
            ServiceId::Signal => "signal",
        }
    }

    /// Its place in [`ServiceId::ALL`]: tables of one entry per service
    /// (`[T; 6]`) are indexed by it.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The client's flag for the service's port (`--signal-port`).
    pub const fn port_flag(self) -> &'static str {
        match self {
            ServiceId::UdpUpload => "udp-upload-port",
            ServiceId::UdpDownload => "udp-download-port",
            ServiceId::UdpSum => "udp-sum-port",
            ServiceId::TcpUpload => "tcp-upload-port",
            ServiceId::MagicDownload => "magic-port",
            ServiceId::Signal => "signal-port",
        }
    }

    /// The environment variable the client reads the port from.
    pub const fn port_env(self) -> &'static str {
        match self {
            ServiceId::UdpUpload => "FERRY_UDP_UPLOAD_PORT",
            ServiceId::UdpDownload => "FERRY_UDP_DOWNLOAD_PORT",
            ServiceId::UdpSum => "FERRY_UDP_SUM_PORT",
            ServiceId::TcpUpload => "FERRY_TCP_UPLOAD_PORT",
            ServiceId::MagicDownload => "FERRY_MAGIC_PORT",
            ServiceId::Signal => "FERRY_SIGNAL_PORT",
        }
    }

    /// UDP or TCP.
    pub const fn transport(self) -> Transport {
        match self {
            ServiceId::UdpUpload | ServiceId::UdpDownload | ServiceId::UdpSum => Transport::Udp,
            ServiceId::TcpUpload | ServiceId::MagicDownload | ServiceId::Signal => Transport::Tcp,
        }
    }

    /// The port it is served on by default: 9000 to 9005.
    pub const fn default_port(self) -> u16 {
        match self {
            ServiceId::UdpUpload => 9000,
            ServiceId::UdpDownload => 9001,
            ServiceId::UdpSum => 9002,
            ServiceId::TcpUpload => 9003,
            ServiceId::MagicDownload => 9004,
            ServiceId::Signal => 9005,
        }
    }
}

impl std::fmt::Display for ServiceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_names_are_distinct_and_in_order() {
        let ports: Vec<u16> = ServiceId::ALL.iter().map(|s| s.default_port()).collect();
        assert_eq!(ports, vec![9000, 9001, 9002, 9003, 9004, 9005]);
        let mut names: Vec<&str> = ServiceId::ALL.iter().map(|s| s.name()).collect();
        names.dedup();
        assert_eq!(names.len(), 6);
        assert_eq!(
            ServiceId::ALL
                .iter()
                .filter(|s| s.transport() == Transport::Udp)
                .count(),
            3
        );
    }

    #[test]
    fn each_service_sits_at_its_index() {
        for (i, s) in ServiceId::ALL.into_iter().enumerate() {
            assert_eq!(s.index(), i, "{s}");
        }
    }
}
