#!/bin/sh
# Arguments: PATH [--human]
path=$1
if [ "$2" = "--human" ]; then df -h "$path"; else df "$path"; fi
