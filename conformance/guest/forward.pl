#!/usr/bin/perl
# The guest's one way out (conformance/guest/guest.ts, option forwardPort): qemu's user-mode
# network runs this once per TCP connection the guest opens to 10.0.2.100:<port>, with the
# connection on stdin and stdout, and it relays the bytes to 127.0.0.1:<port> of qemu's network
# namespace (the test API server). Perl, because perl-base is on every Debian machine and qemu's
# chardev form of guestfwd carries one connection for the guest's whole life, not one per process.
use strict;
use warnings;
use IO::Select;
use IO::Socket::INET;

# A warning on stderr would land in the middle of the guest's TLS stream.
open(STDERR, ">", "/dev/null");
my $port = $ARGV[0] or exit 2;
my $server = IO::Socket::INET->new(PeerAddr => "127.0.0.1", PeerPort => $port, Proto => "tcp") or exit 1;
binmode STDIN;
binmode STDOUT;
my $select = IO::Select->new(\*STDIN, $server);

# Writes all of a buffer: a socket may take part of it.
sub relay {
  my ($to, $bytes) = @_;
  while (length $bytes) {
    my $written = syswrite($to, $bytes);
    return 0 unless defined $written;
    substr($bytes, 0, $written, "");
  }
  return 1;
}

while (my @ready = $select->can_read) {
  for my $from (@ready) {
    my $count = sysread($from, my $bytes, 65536);
    if ($from == $server) {
      # The server closed (or failed): the guest's connection ends with it.
      exit 0 unless $count;
      relay(\*STDOUT, $bytes) or exit 0;
    } elsif ($count) {
      relay($server, $bytes) or exit 0;
    } else {
      # The guest closed its side: pass the half-close on, then wait for the server to finish.
      shutdown($server, 1);
      $select->remove(\*STDIN);
    }
  }
}
