"""kedge.protocol"""
