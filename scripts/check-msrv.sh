#!/usr/bin/env bash
# MSRV check without a second toolchain: fails when a package in the
# dependency graph of the workspace (Cargo.lock, every platform, dev
# dependencies included) declares a `rust-version` above the workspace's own
# `rust-version`. A build on the declared MSRV would catch more (a crate that
# uses a newer feature without declaring it), but only one toolchain can be
# installed on these machines; the declared floor is what cargo itself
# enforces, so it is the one we can keep honest here.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo metadata --format-version 1 --locked | perl -MJSON::PP -e '
  use strict; use warnings;
  local $/; my $m = JSON::PP->new->decode(<STDIN>);
  my %ws = map { $_ => 1 } @{ $m->{workspace_members} };
  my $key = sub { my @v = split /\./, shift; push @v, 0 while @v < 3; sprintf "%05d%05d%05d", @v[0..2] };
  my ($floor, @low, @deps);
  for my $p (@{ $m->{packages} }) {
    my $rv = $p->{rust_version};
    if ($ws{ $p->{id} }) {
      defined $rv or do { push @low, "$p->{name} (workspace member) declares no rust-version"; next };
      $floor = $rv if !defined $floor || $key->($rv) < $key->($floor);
    } elsif (defined $rv) {
      push @deps, [$p->{name}, $p->{version}, $rv];
    }
  }
  defined $floor or die "check-msrv: the workspace declares no rust-version\n";
  my ($max) = sort { $key->($b->[2]) cmp $key->($a->[2]) } @deps;
  for my $d (@deps) {
    push @low, "$d->[0] $d->[1] needs Rust $d->[2]" if $key->($d->[2]) gt $key->($floor);
  }
  if (@low) {
    print STDERR "check-msrv: the workspace declares rust-version $floor but:\n";
    print STDERR "  $_\n" for @low;
    exit 1;
  }
  printf "check-msrv: ok (rust-version %s; highest dependency floor %s from %s %s; %d of %d dependencies declare one)\n",
    $floor, $max ? ($max->[2], $max->[0], $max->[1]) : ("none", "-", "-"), scalar @deps, scalar @{ $m->{packages} } - scalar keys %ws;
'
