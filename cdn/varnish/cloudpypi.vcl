#
# Varnish as the CDN in front of CloudPyPI (Varnish 7.x with vmod_xkey from
# varnish-modules; on Debian: apt-get install varnish varnish-modules).
#
#   varnishd -F -n /var/lib/varnish/cloudpypi -a :80 -f /etc/varnish/cloudpypi.vcl -s malloc,1g
#
# What it does:
# - caches for as long as the application's Surrogate-Control max-age says
#   (Cache-Control is for browsers and is passed on to them untouched);
# - grace (serve stale while fetching anew) = stale-while-revalidate, else 0;
#   keep (revalidate with If-None-Match) = stale-if-error;
# - no caching headers at all: not cached (Varnish's default_ttl is ignored);
# - never caches a response marked private or no-store, a response that sets
#   a cookie, or a request with Authorization or Cookie;
# - tags objects with their Surrogate-Key (copied into xkey) and purges by key
#   on PURGE (header xkey, or xkey-softpurge for a soft purge) and BAN (header
#   xkey), from the purgers ACL only: set [cdn] purge = varnish and
#   varnish_urls = http://this-varnish:port/ in CloudPyPI's config.ini;
# - X-Cache: HIT, MISS or PASS on every response; Surrogate-* and xkey never
#   reach the client.
#
# The backend: edit the two values below (the application's address; with
# several application hosts, use vmod_directors). tests/services/varnish.py
# writes a copy with its own values.
#

vcl 4.1;

import std;
import xkey;

backend default {
    .host = "127.0.0.1";
    .port = "8080";
    .connect_timeout = 5s;
    .first_byte_timeout = 120s;
    .between_bytes_timeout = 60s;
}

# Who may PURGE and BAN: the machines the purge workers run on.
acl purgers {
    "127.0.0.1";
    "::1";
}

sub vcl_recv {
    unset req.http.X-CloudPyPI-Cache;

    if (req.method == "PURGE") {
        if (client.ip !~ purgers) {
            return (synth(403, "Forbidden"));
        }
        if (req.http.xkey-softpurge) {
            set req.http.X-Purged = xkey.softpurge(req.http.xkey-softpurge);
            return (synth(200, "Soft-purged " + req.http.X-Purged));
        }
        if (req.http.xkey) {
            set req.http.X-Purged = xkey.purge(req.http.xkey);
            return (synth(200, "Purged " + req.http.X-Purged));
        }
        # No key: purge this URL.
        return (purge);
    }

    if (req.method == "BAN") {
        if (client.ip !~ purgers) {
            return (synth(403, "Forbidden"));
        }
        # The keys as one alternation, regex metacharacters quoted as [c],
        # matched against whole words of the object's xkey header. The ban
        # parser splits on spaces and keeps quotes and backslashes as they
        # are, so the expression has none of them (keys never hold one).
        std.collect(req.http.xkey, " ");
        set req.http.X-Ban-Keys = regsuball(req.http.xkey, "^[[:space:],]+|[[:space:],]+$", "");
        if (req.http.X-Ban-Keys == "") {
            return (synth(400, "BAN needs an xkey header"));
        }
        set req.http.X-Ban-Keys = regsuball(
            regsuball(req.http.X-Ban-Keys, "([][.+*?^$(){}|])", "[\1]"), "[[:space:],]+", "|");
        std.ban("obj.http.xkey ~ (^|[[:space:]])(" + req.http.X-Ban-Keys + ")([[:space:]]|$)");
        if (std.ban_error() != "") {
            return (synth(400, "Ban refused: " + std.ban_error()));
        }
        return (synth(200, "Banned"));
    }

    if (req.method != "GET" && req.method != "HEAD") {
        return (pass);
    }
    # Whatever depends on who asks is never cached.
    if (req.http.Authorization || req.http.Cookie) {
        return (pass);
    }
    return (hash);
}

sub vcl_hit {
    set req.http.X-CloudPyPI-Cache = "HIT";
}

sub vcl_miss {
    set req.http.X-CloudPyPI-Cache = "MISS";
}

sub vcl_pass {
    set req.http.X-CloudPyPI-Cache = "PASS";
}

sub vcl_backend_fetch {
    unset bereq.http.X-CloudPyPI-Cache;
}

sub vcl_backend_response {
    # Never cache what depends on who asks. A short hit-for-miss: the next
    # request for this URL goes to the application, and may be cached then.
    if (beresp.http.Cache-Control ~ "(?i)(^|[,\s])(private|no-store)([,\s=]|$)"
        || beresp.http.Surrogate-Control ~ "(?i)(^|[,\s])no-store([,\s]|$)"
        || beresp.http.Set-Cookie
        || beresp.http.Vary == "*") {
        set beresp.uncacheable = true;
        set beresp.ttl = 1s;
        set beresp.grace = 0s;
        return (deliver);
    }

    if (beresp.http.Surrogate-Key) {
        set beresp.http.xkey = beresp.http.Surrogate-Key;
    }

    if (beresp.http.Surrogate-Control ~ "(?i)(^|[,\s])max-age=[0-9]+") {
        # The CDN's lifetime: Surrogate-Control wins over Cache-Control.
        set beresp.ttl = std.duration(
            regsub(beresp.http.Surrogate-Control, "(?i)^(.*[,\s])?max-age=([0-9]+).*$", "\2") + "s", 0s);
        if (beresp.http.Surrogate-Control ~ "(?i)stale-while-revalidate=[0-9]+") {
            set beresp.grace = std.duration(regsub(beresp.http.Surrogate-Control,
                "(?i)^.*stale-while-revalidate=([0-9]+).*$", "\1") + "s", 0s);
        } else {
            set beresp.grace = 0s;
        }
        if (beresp.http.Surrogate-Control ~ "(?i)stale-if-error=[0-9]+") {
            set beresp.keep = std.duration(regsub(beresp.http.Surrogate-Control,
                "(?i)^.*stale-if-error=([0-9]+).*$", "\1") + "s", 0s);
        } else {
            set beresp.keep = 0s;
        }
    } else if (beresp.http.Cache-Control ~ "(?i)(s-maxage|max-age)=[0-9]+" || beresp.http.Expires) {
        # Varnish has already set the TTL from Cache-Control or Expires, and
        # grace from its stale-while-revalidate; without one, no grace.
        if (beresp.http.Cache-Control !~ "(?i)stale-while-revalidate=[0-9]+") {
            set beresp.grace = 0s;
        }
    } else {
        # No caching headers: not cached (whatever default_ttl says).
        set beresp.uncacheable = true;
        set beresp.ttl = 1s;
        set beresp.grace = 0s;
        return (deliver);
    }

    if (beresp.ttl <= 0s) {
        set beresp.uncacheable = true;
        set beresp.ttl = 1s;
        set beresp.grace = 0s;
    }
    # Deliver here: the built-in VCL would refuse responses whose
    # Cache-Control only addresses browsers.
    return (deliver);
}

sub vcl_deliver {
    if (obj.uncacheable) {
        set resp.http.X-Cache = "PASS";
    } else if (req.http.X-CloudPyPI-Cache) {
        set resp.http.X-Cache = req.http.X-CloudPyPI-Cache;
    } else {
        set resp.http.X-Cache = "MISS";
    }
    unset resp.http.Surrogate-Key;
    unset resp.http.Surrogate-Control;
    unset resp.http.xkey;
}

sub vcl_synth {
    unset resp.http.Surrogate-Key;
    unset resp.http.Surrogate-Control;
    unset resp.http.xkey;
}
