# Throughput and latency per workload: direct to the sink, through smtpscreen, and through
# Postfix's postscreen (+ smtpd with smtpd_proxy_filter to the same sink).
# usage: gnuplot -c bench/plot.gp DATA OUT.png [POSTSCREEN]
# DATA columns: workload direct_rate through_rate direct_p50 through_p50 direct_p99 through_p99
#               postscreen_rate postscreen_p50 postscreen_p99
# ("-" where a leg was not run). POSTSCREEN: 1 when any postscreen leg ran (default 0: the
# postscreen series are left out). Log scales: the workloads span 10 to 20,000 sessions/s.
data = ARG1
ps = (ARGC >= 3 && ARG3 eq "1") ? 1 : 0
set terminal pngcairo size 1200,900 font ",10" noenhanced
set output ARG2
set datafile missing "-"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set grid ytics
set key outside right top
set xtics rotate by -20 nomirror
set logscale y

if (ps) {
    set multiplot layout 2,1 title "smtpscreen bench: smtp-sink direct vs through smtpscreen vs through postscreen (loopback, 2 shared cores)"
} else {
    set multiplot layout 2,1 title "smtpscreen bench: smtp-sink direct vs through smtpscreen (loopback, 2 shared cores)"
}

set title "throughput"
set ylabel "sessions/s"
set yrange [1:*]
if (ps) {
    plot data using 2:xtic(1) title "direct" lc rgb "#4477aa", \
         '' using 3 title "through smtpscreen" lc rgb "#ee6677", \
         '' using 8 title "through postscreen" lc rgb "#228833"
} else {
    plot data using 2:xtic(1) title "direct" lc rgb "#4477aa", \
         '' using 3 title "through smtpscreen" lc rgb "#ee6677"
}

set title "latency (connect to end of session)"
set ylabel "ms"
set yrange [0.1:*]
if (ps) {
    plot data using 4:xtic(1) title "direct p50" lc rgb "#88aadd", \
         '' using 5 title "through p50" lc rgb "#ffaabb", \
         '' using 9 title "postscreen p50" lc rgb "#99dd99", \
         '' using 6 title "direct p99" lc rgb "#224488", \
         '' using 7 title "through p99" lc rgb "#aa3344", \
         '' using 10 title "postscreen p99" lc rgb "#116622"
} else {
    plot data using 4:xtic(1) title "direct p50" lc rgb "#88aadd", \
         '' using 5 title "through p50" lc rgb "#ffaabb", \
         '' using 6 title "direct p99" lc rgb "#224488", \
         '' using 7 title "through p99" lc rgb "#aa3344"
}

unset multiplot
