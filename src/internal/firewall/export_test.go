package firewall
